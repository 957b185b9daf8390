//! One structured line per request. Layers and the dispatcher leave what they
//! learned (identity, model, deployment, error) in the response extensions.
//! A relayed stream's line is written when the stream ends, with how it
//! ended, so a client that aborts a stream shows in the log and in
//! `sluice_streams_total`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Method};
use tracing::Instrument;

use super::{call_span, call_trace};

use crate::engines::auth::AuthRefused;
use crate::infra::metrics::Metrics;
use crate::infra::otel::{LiveSpan, Tracer};
use crate::util::headers::X_REQUEST_ID;
use crate::util::text::clip;
use crate::vocab::Identity;
use crate::vocab::error::ErrorLogged;
use crate::vocab::{Hedged, ServedBy, StreamEnded, StreamOutcome};

/// What layer 4 needs: the stream counter and the tracer.
#[derive(Clone)]
pub struct AccessLog {
    pub metrics: Metrics,
    pub tracer: Tracer,
}

/// `latency_us` is to the response head, or for a stream to its end. The
/// call's span (see `call_span`) and its OpenTelemetry span (see
/// `call_trace`) are made here; the log span covers the line too, and the
/// OpenTelemetry span ends with it.
pub async fn access_log(
    State(AccessLog { metrics, tracer }): State<AccessLog>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let span = call_span::span_of(&request);
    let trace = call_trace::open(&tracer, &mut request);
    let trace_id = crate::infra::otel::trace_id_of(trace.as_ref(), request.headers());
    let method = request.method().clone();
    // The path is the client's: quoted with a bound, like every echo.
    let path = clip(request.uri().path()).into_owned();
    let request_id = request.headers().get(X_REQUEST_ID).cloned();
    let response = next.run(request).instrument(span.clone()).await;
    if let Some(trace) = &trace {
        call_trace::on_response(trace, &response);
    }
    let extensions = response.extensions();
    let line = Line {
        request_id,
        method,
        path,
        status: response.status().as_u16(),
        key: extensions.get::<Arc<Identity>>().cloned(),
        served: extensions.get::<ServedBy>().cloned(),
        hedge: extensions.get::<Hedged>().copied(),
        error: extensions.get::<ErrorLogged>().map(|e| e.0.clone()),
        // Refused credentials are counted and logged in the aggregate by
        // the auth guard; one info line each would let a flood of bad keys
        // flood the log.
        refused: extensions.get::<AuthRefused>().is_some(),
        started,
        trace,
        trace_id,
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

/// What one access line says, owned so a stream's can wait for its end.
struct Line {
    request_id: Option<HeaderValue>,
    method: Method,
    path: String,
    status: u16,
    key: Option<Arc<Identity>>,
    served: Option<ServedBy>,
    hedge: Option<Hedged>,
    error: Option<String>,
    refused: bool,
    started: Instant,
    trace: Option<LiveSpan>,
    trace_id: Option<String>,
}

impl Line {
    fn write(&self, outcome: Option<StreamOutcome>) {
        if let Some(trace) = &self.trace {
            call_trace::close(trace, outcome);
        }
        let served = self.served.as_ref();
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "sluice::access",
                    $level,
                    request_id = self.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                    method = %self.method,
                    path = self.path,
                    status = self.status,
                    key = self.key.as_ref().map_or("-", |i| &*i.name),
                    model = served.map_or("-", |s| &*s.model),
                    deployment = served.map_or("-", |s| &*s.deployment),
                    latency_us = self.started.elapsed().as_micros() as u64,
                    stream = outcome.map(StreamOutcome::as_str),
                    hedge = self.hedge.map(Hedged::as_str),
                    error = self.error.as_deref(),
                    trace_id = self.trace_id.as_deref(),
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
