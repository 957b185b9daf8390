//! The HTTP server: builds the gateway from config, serves it, and shuts it
//! down gracefully.

mod access_log;
pub mod admin;
mod call_span;
mod call_trace;
mod conn;
mod cors;
mod encoding;
mod fallback;
mod fd_limit;
mod health;
mod live;
mod messages;
mod record;
mod request_id;
mod stack;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::infra::workers::Spread;
use crate::util::tasks::Tasks;
use conn::{Connections, Phase, Timeouts};
pub use fd_limit::raise_fd_limit;
use live::{Listener, Live};

/// Time for final error events to reach clients once the grace period is over.
const CUT_FLUSH: Duration = Duration::from_secs(1);

/// Time for background work (charges, cache writes, webhooks) left after
/// the last request to finish.
const TASKS_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Build(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// The gateway's listeners: the API, and the admin and metrics ones when
/// `[admin] listen` / `[metrics] listen` are set.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: Option<TcpListener>,
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self {
            api,
            admin: None,
            metrics: None,
        }
    }
}

/// A built gateway, ready to serve on its listeners.
pub struct Gateway {
    live: Arc<Live>,
    apart: stack::Apart,
    cors: Option<cors::CorsLayer>,
    timeouts: Timeouts,
    max_connections: usize,
    shutdown_grace: Duration,
    drain_delay: Duration,
    /// Worker threads to hand connections to (`spread_over`).
    spread: Option<Arc<Spread>>,
}

/// The app of each listener: the process-long outer layers around the
/// snapshot in force.
struct Apps {
    api: axum::Router,
    admin: Option<axum::Router>,
    metrics: Option<axum::Router>,
}

impl Gateway {
    /// A gateway on `config`, with no file to reload from.
    pub fn build(config: &Config) -> Result<Self, StartError> {
        Self::start(config.clone(), None)
    }

    /// A gateway on the config read from `path`; SIGHUP, `POST /admin/reload`
    /// and (with `[server] watch_config`) edits of the file reload it.
    pub fn from_file(config: Config, path: PathBuf) -> Result<Self, StartError> {
        Self::start(config, Some(path))
    }

    fn start(config: Config, path: Option<PathBuf>) -> Result<Self, StartError> {
        let apart = stack::Apart {
            admin: config.admin.listen.is_some(),
            metrics: config.metrics.listen.is_some(),
        };
        Ok(Self {
            timeouts: Timeouts {
                header_read: config.server.header_read_timeout,
                idle: config.server.idle_timeout,
            },
            max_connections: fd_limit::max_connections(config.server.max_connections),
            shutdown_grace: config.server.shutdown_grace,
            drain_delay: config.server.drain_delay,
            cors: cors::layer(&config.server.cors_origins),
            live: Live::start(config, path, Tasks::new(), apart)?,
            apart,
            spread: None,
        })
    }

    /// Hands each accepted connection to one of these workers' threads,
    /// where it stays (`[server] runtime = "per_core"`); without it,
    /// connections run on the runtime that serves the gateway.
    pub fn spread_over(mut self, spread: Arc<Spread>) -> Self {
        self.spread = Some(spread);
        self
    }

    /// Opens the runtime keys store and puts its keys in force; then each
    /// listener's app.
    async fn apps(&self) -> Result<Apps, StartError> {
        let live = &self.live;
        let file = live.file_config();
        let keys = live::keys::open(&file, live)
            .await
            .map_err(StartError::Build)?;
        if let Some(keys) = &keys {
            live::keys::follow(live, keys).await;
        }
        let metrics = live.registries.metrics.clone();
        let tracer = live.registries.tracer.clone();
        let outer =
            |router: axum::Router, cors| stack::outer_layers(router, cors, &metrics, &tracer);
        let in_force = |listener| axum::Router::new().fallback_service(live.app(listener));
        let core = live::admin::Core(Arc::downgrade(live));
        let core_admin = admin::live_routes(Arc::new(core), keys);
        let (api_admin, apart_admin) = if self.apart.admin {
            (axum::Router::new(), core_admin)
        } else {
            (core_admin, axum::Router::new())
        };
        Ok(Apps {
            api: outer(api_admin.merge(in_force(Listener::Api)), self.cors.clone()),
            admin: self
                .apart
                .admin
                .then(|| outer(apart_admin.merge(in_force(Listener::Admin)), None)),
            metrics: self
                .apart
                .metrics
                .then(|| outer(in_force(Listener::Metrics), None)),
        })
    }

    /// Binds `[server] listen`, and `[admin] listen` / `[metrics] listen` when set.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        Ok(Listeners {
            api: bind(&config.server.listen).await?,
            admin: bind_optional(config.admin.listen.as_deref()).await?,
            metrics: bind_optional(config.metrics.listen.as_deref()).await?,
        })
    }

    /// Serves until `shutdown` resolves, then (on a `Stop::Terminate`)
    /// drains for `[server] drain_delay`, lets in-flight requests and
    /// streams finish for up to the grace period before cutting them, and
    /// writes the pending usage records.
    pub async fn serve<S: Into<Stop>>(
        self,
        listeners: impl Into<Listeners>,
        shutdown: impl Future<Output = S> + Send + 'static,
    ) -> Result<(), StartError> {
        let result = match self.apps().await {
            Ok(apps) => {
                self.live.watch();
                self.serve_connections(apps, listeners.into(), shutdown)
                    .await
            }
            Err(error) => Err(error),
        };
        let registries = &self.live.registries;
        if let Some(ledger) = &registries.ledger {
            ledger.flush(Duration::from_secs(10)).await;
        }
        if !registries.tasks.drain(TASKS_DRAIN).await {
            tracing::warn!("background tasks still running at exit");
        }
        result
    }

    /// Each listener with its app; a listener without an app (or the reverse)
    /// is a caller's mistake.
    fn pair(
        apps: Apps,
        listeners: Listeners,
    ) -> Result<Vec<(TcpListener, axum::Router)>, StartError> {
        let mut pairs = vec![(listeners.api, apps.api)];
        for (name, app, listener) in [
            ("admin", apps.admin, listeners.admin),
            ("metrics", apps.metrics, listeners.metrics),
        ] {
            match (app, listener) {
                (Some(app), Some(listener)) => pairs.push((listener, app)),
                (None, None) => {}
                _ => {
                    return Err(StartError::Build(format!(
                        "{name}.listen and the {name} listener given disagree"
                    )));
                }
            }
        }
        Ok(pairs)
    }

    async fn serve_connections<S: Into<Stop>>(
        &self,
        apps: Apps,
        listeners: Listeners,
        shutdown: impl Future<Output = S> + Send + 'static,
    ) -> Result<(), StartError> {
        let pairs = Self::pair(apps, listeners)?;
        let (phase, phase_rx) = watch::channel(Phase::Serving);
        let tracker = TaskTracker::new();
        let connections = Connections::new(
            self.timeouts,
            self.max_connections,
            self.live.registries.metrics.connections.clone(),
            phase_rx,
            tracker.clone(),
            self.live.registries.draining.clone(),
            self.spread.clone(),
        );
        tracing::info!(max_connections = self.max_connections, "connection limit");
        for (listener, _) in &pairs {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(%address, "sluice listening");
            }
        }
        let accepting = futures_util::future::join_all(
            pairs
                .into_iter()
                .map(|(listener, app)| connections.clone().accept_loop(listener, app)),
        );
        let mut accepting = std::pin::pin!(accepting);
        let stop = tokio::select! {
            stop = shutdown => stop.into(),
            _ = &mut accepting => Stop::Interrupt,
        };
        self.live.registries.draining.fire();
        if stop == Stop::Terminate && !self.drain_delay.is_zero() {
            tracing::info!(
                drain_delay_ms = self.drain_delay.as_millis() as u64,
                "shutting down; /readyz answers 503 while the listeners stay open"
            );
            phase.send_replace(Phase::Leaving);
            tokio::select! {
                () = tokio::time::sleep(self.drain_delay) => {}
                _ = &mut accepting => {}
            }
        }
        tracing::info!(
            grace_ms = self.shutdown_grace.as_millis() as u64,
            "shutting down; draining in-flight requests"
        );
        phase.send_replace(Phase::Draining);
        accepting.await;
        tracker.close();
        if tokio::time::timeout(self.shutdown_grace, tracker.wait())
            .await
            .is_ok()
        {
            return Ok(());
        }
        // Open streams end with a "shutting down" SSE error event at their
        // next chunk or timer tick; the flush window lets those reach clients.
        tracing::warn!("shutdown grace period over; ending in-flight streams");
        self.live.registries.cut.fire();
        if tokio::time::timeout(CUT_FLUSH, tracker.wait())
            .await
            .is_err()
        {
            // Whatever still runs is dropped with its connection.
            phase.send_replace(Phase::Stop);
            let _ = tokio::time::timeout(CUT_FLUSH, tracker.wait()).await;
        }
        Ok(())
    }
}

async fn bind(address: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            address: address.to_owned(),
            source,
        })
}

async fn bind_optional(address: Option<&str>) -> Result<Option<TcpListener>, StartError> {
    match address {
        Some(address) => bind(address).await.map(Some),
        None => Ok(None),
    }
}

/// How the gateway was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, what orchestrators send: readiness turns false and the
    /// listeners stay open for `[server] drain_delay` first.
    Terminate,
    /// SIGINT (Ctrl-C at a terminal): the listeners close at once.
    Interrupt,
}

/// A shutdown future that says nothing is one an orchestrator sent.
impl From<()> for Stop {
    fn from((): ()) -> Self {
        Self::Terminate
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is called, and
/// resolves on the first with which. Registered at once, not when first
/// polled: a SIGTERM that came between the first health check passing and
/// the server polling this would otherwise kill the process by default,
/// with no drain.
pub fn shutdown_signal() -> impl Future<Output = Stop> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn received(signal: std::io::Result<Signal>) {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        let interrupt = received(signal(SignalKind::interrupt()));
        let terminate = received(signal(SignalKind::terminate()));
        async move {
            tokio::select! {
                () = interrupt => Stop::Interrupt,
                () = terminate => Stop::Terminate,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        Stop::Interrupt
    }
}
