//! The connection layer: accept loops, one owned task per connection (HTTP/1
//! or HTTP/2 prior knowledge), and the deadlines hyper does not enforce by
//! itself: a request head within `header_read_timeout`, idleness within
//! `idle_timeout`, at most `max_connections` open.

mod activity;
mod capacity;
mod tracked;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use activity::Timeouts;
use activity::{Activity, Check, Expiry};
use capacity::{Capacity, Open, SHED_DEADLINE, Shedding};
use tracked::{Tracked, Watched};

use crate::infra::telemetry::LogEvery;
use crate::infra::workers::Spread;
use crate::util::shutdown::Draining;

/// Pause after an accept error such as EMFILE, so a full descriptor table
/// is not retried in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Time an idle HTTP/2 connection gets to take its GOAWAY before it is dropped.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Once draining, how long a connection that awaits a request (accepted but
/// not yet read, or a head under way) gets for it before it is closed: its
/// client may have sent it already, and a request lost to a close is an
/// error a load balancer cannot retry. The answer says `connection: close`.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Where shutdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// `[server] drain_delay`: readiness is false, but listeners still
    /// accept; HTTP/1 answers close their connections, HTTP/2 connections
    /// get a GOAWAY.
    Leaving,
    /// Stop accepting; connections close once their requests are done.
    Draining,
    /// The grace period and the cut are over: drop what is left.
    Stop,
}

/// Runs hyper's HTTP/2 stream tasks on the connection tracker, so shutdown
/// waits for them like for the connections. With worker threads, the
/// streams of one HTTP/2 connection are spread over them too: a proxy or
/// mesh in front that multiplexes many calls on a few connections would
/// otherwise have them all served by one core.
#[derive(Clone)]
pub struct Spawner {
    tracker: TaskTracker,
    spread: Option<Arc<Spread>>,
}

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        match &self.spread {
            Some(spread) => self.tracker.spawn_on(future, spread.pick()),
            None => self.tracker.spawn(future),
        };
    }
}

/// What every accept loop and connection task shares.
pub struct Connections {
    builder: auto::Builder<Spawner>,
    timeouts: Timeouts,
    capacity: Arc<Capacity>,
    phase: watch::Receiver<Phase>,
    tracker: TaskTracker,
    accept_errors: LogEvery,
    draining: Draining,
    /// The worker threads connections are handed to; `None`: they run on
    /// the runtime that accepts them.
    spread: Option<Arc<Spread>>,
}

impl Connections {
    pub fn new(
        timeouts: Timeouts,
        max_connections: usize,
        gauge: prometheus::IntGauge,
        phase: watch::Receiver<Phase>,
        tracker: TaskTracker,
        draining: Draining,
        spread: Option<Arc<Spread>>,
    ) -> Arc<Self> {
        let mut builder = auto::Builder::new(Spawner {
            tracker: tracker.clone(),
            spread: spread.clone(),
        });
        // The watchdog below owns the head deadline; hyper's would also
        // close idle keep-alive connections after it.
        builder.http1().header_read_timeout(None);
        Arc::new(Self {
            builder,
            timeouts,
            capacity: Capacity::new(max_connections, gauge),
            phase,
            tracker,
            accept_errors: LogEvery::new(Duration::from_secs(5)),
            draining,
            spread,
        })
    }

    /// Accepts until the listeners close at shutdown; then takes the
    /// connections already queued in the backlog (their clients may have
    /// sent requests on them: dropping the listener would reset them) and
    /// drops the listener.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, app: Router) {
        use futures_util::FutureExt;
        let mut phase = self.phase.clone();
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = phase.wait_for(|phase| *phase >= Phase::Draining) => break,
            };
            match tcp {
                Ok((tcp, peer)) => self.start(tcp, peer, &app),
                Err(error) => self.accept_failed(error).await,
            }
        }
        while let Some(Ok((tcp, peer))) = listener.accept().now_or_never() {
            self.start(tcp, peer, &app);
        }
    }

    fn start(self: &Arc<Self>, tcp: TcpStream, peer: SocketAddr, app: &Router) {
        // Small SSE chunks must leave at once, not wait on Nagle.
        let _ = tcp.set_nodelay(true);
        match self.capacity.admit() {
            Ok(open) => match &self.spread {
                Some(spread) => self.start_on(spread.pick(), tcp, peer, app, open),
                None => {
                    let task = self.clone().serve(tcp, peer, app.clone(), open);
                    self.tracker.spawn(task);
                }
            },
            Err(Some(shedding)) => {
                self.tracker.spawn(self.clone().shed(tcp, shedding));
            }
            Err(None) => drop(tcp),
        }
    }

    /// Moves the connection to `worker`'s runtime: its socket is taken off
    /// this runtime's poller and registered with the worker's, so its reads
    /// and writes wake that thread alone.
    fn start_on(
        self: &Arc<Self>,
        worker: &Handle,
        tcp: TcpStream,
        peer: SocketAddr,
        app: &Router,
        open: Open,
    ) {
        let socket = match tcp.into_std() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%error, "cannot hand a connection to a worker");
                return;
            }
        };
        let this = self.clone();
        let app = app.clone();
        let task = async move {
            match TcpStream::from_std(socket) {
                Ok(tcp) => this.serve(tcp, peer, app, open).await,
                Err(error) => tracing::debug!(%error, "a worker cannot take a connection"),
            }
        };
        self.tracker.spawn_on(task, worker);
    }

    async fn accept_failed(&self, error: io::Error) {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        // A client that left before its accept: nothing wrong here.
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            tracing::debug!(%error, "a connection ended before it was accepted");
            return;
        }
        if self.accept_errors.due() {
            tracing::warn!(
                %error,
                "cannot accept connections (out of file descriptors? see [server] max_connections); retrying"
            );
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }

    /// Serves one connection until it ends, its deadline passes, or
    /// shutdown drops it.
    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, app: Router, _open: Open) {
        let activity = Activity::new();
        let io = TokioIo::new(Watched::new(tcp, activity.clone()));
        let service = Tracked::new(app, activity.clone(), peer, self.draining.clone());
        let mut conn = pin!(self.builder.serve_connection_with_upgrades(io, service));
        let mut phase = self.phase.clone();
        let first_check = self.timeouts.header_read.min(self.timeouts.idle);
        let mut timer = pin!(tokio::time::sleep(first_check));
        let mut closing = false;
        let mut shutdown_deferred = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = &mut timer => {
                    if closing {
                        return;
                    }
                    if std::mem::take(&mut shutdown_deferred) {
                        conn.as_mut().graceful_shutdown();
                        continue;
                    }
                }
                changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                    Ok(Phase::Leaving) if activity.is_http2() => {
                        conn.as_mut().graceful_shutdown();
                        continue;
                    }
                    Ok(Phase::Draining) if activity.awaits_a_request() => {
                        shutdown_deferred = true;
                        timer.as_mut().reset(Instant::now() + FIRST_REQUEST_GRACE);
                        continue;
                    }
                    Ok(Phase::Draining) => {
                        conn.as_mut().graceful_shutdown();
                        continue;
                    }
                    Ok(Phase::Serving | Phase::Leaving) => continue,
                    Ok(Phase::Stop) | Err(_) => return,
                },
            }
            // The timer fired: a deadline, or a check-back (requests never
            // wake this task; see `Activity::next_check`).
            let now = Instant::now();
            match activity.next_check(&self.timeouts, now) {
                Check::At(at) => timer.as_mut().reset(at),
                // An idle HTTP/2 connection gets a GOAWAY; anything else
                // has no request to lose and is dropped.
                Check::Expired(Expiry::Idle) if activity.is_http2() => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    timer.as_mut().reset(now + GOAWAY_GRACE);
                }
                Check::Expired(expiry) => {
                    tracing::debug!(?expiry, "closing a connection past its deadline");
                    return;
                }
            }
        }
    }

    /// Answers a connection past `max_connections` with a 503 and closes it.
    async fn shed(self: Arc<Self>, tcp: TcpStream, _shedding: Shedding) {
        let capacity = self.capacity.clone();
        let service = hyper::service::service_fn(move |_request| {
            std::future::ready(Ok::<_, std::convert::Infallible>(capacity.refusal()))
        });
        let conn = self.builder.serve_connection(TokioIo::new(tcp), service);
        let mut phase = self.phase.clone();
        tokio::select! {
            _ = tokio::time::timeout(SHED_DEADLINE, conn) => {}
            _ = phase.wait_for(|phase| *phase >= Phase::Draining) => {}
        }
    }
}
