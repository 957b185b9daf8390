//! One structured line per request. Layers and the dispatcher leave what they
//! learned (identity, model, deployment, error) in the response extensions.
//! A relayed stream's line is written when the stream ends, with how it
//! ended, so a client that aborts a stream shows in the log and in
//! `sluice_streams_total`.
//!
//! A tower layer written out, not axum's `from_fn`: that boxes a clone of
//! the inner stack and the future on every call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, Method};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::{call_span, call_trace};

use crate::engines::auth::AuthRefused;
use crate::infra::metrics::Metrics;
use crate::infra::otel::{LiveSpan, Tracer};
use crate::util::headers::X_REQUEST_ID;
use crate::util::text::clip;
use crate::vocab::Identity;
use crate::vocab::error::ErrorLogged;
use crate::vocab::{Hedged, ServedBy, StreamEnded, StreamOutcome};

/// Layer 4: the stream counter and the tracer it needs.
#[derive(Clone)]
pub struct AccessLog {
    pub metrics: Metrics,
    pub tracer: Tracer,
}

impl<S> Layer<S> for AccessLog {
    type Service = AccessLogged<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLogged {
            log: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct AccessLogged<S> {
    log: AccessLog,
    inner: S,
}

/// What the line needs from the request, kept until the response head.
struct Opened {
    metrics: Metrics,
    asked: Asked,
}

/// The line's part that the request gives, and when it came.
struct Asked {
    started: Instant,
    method: Method,
    path: String,
    request_id: Option<HeaderValue>,
    trace: Option<LiveSpan>,
    trace_id: Option<String>,
}

/// `latency_us` is to the response head, or for a stream to its end. The
/// call's span (see `call_span`) and its OpenTelemetry span (see
/// `call_trace`) are made here; the log span covers the inner service's
/// call and future and the line too, and the OpenTelemetry span ends with
/// the line.
impl<S> Service<Request> for AccessLogged<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let span = call_span::span_of(&request);
        let trace = call_trace::open(&self.log.tracer, &mut request);
        let trace_id = crate::infra::otel::trace_id_of(trace.as_ref(), request.headers());
        let opened = Opened {
            metrics: self.log.metrics.clone(),
            asked: Asked {
                started,
                method: request.method().clone(),
                // The path is the client's: quoted with a bound, like every echo.
                path: clip(request.uri().path()).into_owned(),
                request_id: request.headers().get(X_REQUEST_ID).cloned(),
                trace,
                trace_id,
            },
        };
        let inner = span.in_scope(|| self.inner.call(request));
        Logged {
            inner: inner.instrument(span),
            opened: Some(opened),
        }
    }
}

pin_project! {
    /// The inner service's future inside the call's span; the line is
    /// written (or, for a stream, set to be written) on its response.
    pub struct Logged<F> {
        #[pin]
        inner: Instrumented<F>,
        opened: Option<Opened>,
    }
}

impl<F, E> Future for Logged<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        let span = this.inner.span().clone();
        Poll::Ready(match (result, this.opened.take()) {
            (Ok(response), Some(opened)) => Ok(opened.close(span, response)),
            (result, _) => result,
        })
    }
}

impl Opened {
    fn close(self, span: tracing::Span, response: Response) -> Response {
        let Self { metrics, asked } = self;
        if let Some(trace) = &asked.trace {
            call_trace::on_response(trace, &response);
        }
        let extensions = response.extensions();
        let line = Line {
            asked,
            status: response.status().as_u16(),
            key: extensions.get::<Arc<Identity>>().cloned(),
            served: extensions.get::<ServedBy>().cloned(),
            hedge: extensions.get::<Hedged>().copied(),
            error: extensions.get::<ErrorLogged>().map(|e| e.0.clone()),
            // Refused credentials are counted and logged in the aggregate by
            // the auth guard; one info line each would let a flood of bad keys
            // flood the log.
            refused: extensions.get::<AuthRefused>().is_some(),
        };
        span.in_scope(|| match extensions.get::<StreamEnded>() {
            // Written by the relay's drop, when the stream has ended.
            Some(ended) => ended.then(move |outcome| {
                metrics.streams.with_label_values(&[outcome.as_str()]).inc();
                line.write(Some(outcome));
            }),
            None => line.write(None),
        });
        call_span::body_in(span, response)
    }
}
/// What one access line says, owned so a stream's can wait for its end.
struct Line {
    asked: Asked,
    status: u16,
    key: Option<Arc<Identity>>,
    served: Option<ServedBy>,
    hedge: Option<Hedged>,
    error: Option<String>,
    refused: bool,
}

impl Line {
    fn write(&self, outcome: Option<StreamOutcome>) {
        let asked = &self.asked;
        if let Some(trace) = &asked.trace {
            call_trace::close(trace, outcome);
        }
        let served = self.served.as_ref();
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "sluice::access",
                    $level,
                    request_id = asked.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                    method = %asked.method,
                    path = asked.path,
                    status = self.status,
                    key = self.key.as_ref().map_or("-", |i| &*i.name),
                    model = served.map_or("-", |s| &*s.model),
                    deployment = served.map_or("-", |s| &*s.deployment),
                    latency_us = asked.started.elapsed().as_micros() as u64,
                    stream = outcome.map(StreamOutcome::as_str),
                    hedge = self.hedge.map(Hedged::as_str),
                    error = self.error.as_deref(),
                    trace_id = asked.trace_id.as_deref(),
                )
            };
        }
        if self.refused {
            line!(tracing::Level::DEBUG);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}
