//! The pieces that feed a connection's [`Activity`]: its socket (bytes
//! read), the service (a request begins) and the response body (it ends when
//! the body is done, so a long stream counts as in flight, not idle).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::Service;

use super::activity::{Activity, InFlight};
use crate::util::shutdown::Draining;

static CLOSE: http::HeaderValue = http::HeaderValue::from_static("close");

/// A client socket that reports reads to its connection's activity.
pub struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub fn new(tcp: TcpStream, activity: Arc<Activity>) -> Self {
        Self { tcp, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The app as hyper calls it, marking each request in flight and telling it
/// the client's address (the failed-authentication throttle keys on it).
/// Once shutdown has begun, HTTP/1 answers say `connection: close`, so a
/// client or load balancer opens its next connection elsewhere instead of
/// finding this one closed under a request it just sent.
#[derive(Clone)]
pub struct Tracked {
    app: Router,
    activity: Arc<Activity>,
    peer: ConnectInfo<SocketAddr>,
    draining: Draining,
}

impl Tracked {
    pub fn new(app: Router, activity: Arc<Activity>, peer: SocketAddr, draining: Draining) -> Self {
        Self {
            app,
            activity,
            peer: ConnectInfo(peer),
            draining,
        }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedCall;

    fn call(&self, mut request: http::Request<Incoming>) -> TrackedCall {
        let version = request.version();
        let in_flight = self.activity.begin(version);
        request.extensions_mut().insert(self.peer);
        TrackedCall {
            inner: self.app.clone().call(request),
            in_flight: Some(in_flight),
            close_if_draining: (version < http::Version::HTTP_2).then(|| self.draining.clone()),
        }
    }
}

pin_project! {
    /// The app's answer, its body carrying the in-flight mark.
    pub struct TrackedCall {
        #[pin]
        inner: axum::routing::future::RouteFuture<Infallible>,
        in_flight: Option<InFlight>,
        close_if_draining: Option<Draining>,
    }
}

impl Future for TrackedCall {
    type Output = Result<http::Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if this
            .close_if_draining
            .as_ref()
            .is_some_and(Draining::is_fired)
        {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, CLOSE.clone());
        }
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until dropped.
    pub struct TrackedBody {
        #[pin]
        body: axum::body::Body,
        _in_flight: Option<InFlight>,
    }
}

impl Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
