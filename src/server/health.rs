//! Liveness and readiness probes, outside auth.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::dispatch::Dispatcher;
use crate::error::json_response;
use crate::metrics::Metrics;

/// The process is up and serving HTTP.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

/// Config is loaded and at least one model has a deployment to go to.
pub async fn readyz(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    let models = dispatcher.router().model_names().len();
    if models == 0 {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"not_ready","reason":"no deployment is usable"}"#.into(),
        );
    }
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"ready","models":{models}}}"#),
    )
        .into_response()
}

/// Prometheus text exposition; no key needed (scrapers run inside the network).
pub async fn metrics(State(metrics): State<Metrics>) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}
