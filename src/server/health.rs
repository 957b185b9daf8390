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

/// Config is loaded and at least one deployment is usable (not throttled,
/// out of headroom, or behind an open circuit).
pub async fn readyz(State(dispatcher): State<Arc<Dispatcher>>) -> Response {
    let router = dispatcher.router();
    let now = tokio::time::Instant::now();
    let usable = router
        .backends()
        .iter()
        .filter(|backend| backend.health.usable(now).is_ok())
        .count();
    let body = serde_json::json!({
        "status": if usable > 0 { "ready" } else { "not_ready" },
        "models": router.model_names().len(),
        "deployments": router.backends().len(),
        "usable_deployments": usable,
    });
    let status = if usable > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body.to_string().into())
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
