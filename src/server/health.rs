//! Liveness and readiness probes, outside auth.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::dispatch::Dispatcher;
use crate::engines::queue::Scheduler;
use crate::engines::routing::{BreakerState, ModelRouter};
use crate::infra::metrics::Metrics;
use crate::util::shutdown::{Draining, Warmed};
use crate::vocab::error::json_response;

/// The process is up and serving HTTP.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

/// What readiness reads.
#[derive(Clone)]
pub struct Readiness {
    pub dispatcher: Arc<Dispatcher>,
    pub draining: Draining,
    pub warmed: Warmed,
}

/// Config is loaded, the tokenizer tables are (with a ledger), shutdown has
/// not begun, and at least one deployment is usable (not throttled, out of
/// headroom, or behind an open circuit).
pub async fn readyz(State(readiness): State<Readiness>) -> Response {
    if readiness.draining.is_fired() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"draining"}"#.into(),
        );
    }
    if !readiness.warmed.is_fired() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"starting"}"#.into(),
        );
    }
    let router = readiness.dispatcher.router();
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

/// What a scrape reads besides the counters: state to sample.
#[derive(Clone)]
pub struct Scrape {
    pub metrics: Metrics,
    pub router: Arc<ModelRouter>,
    pub admission: Option<Arc<Scheduler>>,
}

/// Prometheus text exposition; no key needed (scrapers run inside the
/// network). Per-deployment state is sampled now, not on every request.
pub async fn metrics(State(scrape): State<Scrape>) -> Response {
    let metrics = &scrape.metrics;
    if let Some(admission) = &scrape.admission {
        metrics
            .queue_depth
            .with_label_values(&["gateway"])
            .set(admission.depth() as i64);
    }
    for backend in scrape.router.backends() {
        let name = &*backend.deployment.name;
        let health = &backend.health;
        let state = match health.breaker_state() {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        metrics.circuit_state.with_label_values(&[name]).set(state);
        let headroom = health.headroom(tokio::time::Instant::now());
        metrics
            .headroom
            .with_label_values(&[name])
            .set((headroom * 100.0).round() as i64);
        let (requests, tokens) = health.remaining();
        if let Some(requests) = requests {
            metrics
                .remaining_requests
                .with_label_values(&[name])
                .set(requests as i64);
        }
        if let Some(tokens) = tokens {
            metrics
                .remaining_tokens
                .with_label_values(&[name])
                .set(tokens as i64);
        }
        if let Some(slots) = &backend.slots {
            metrics
                .queue_depth
                .with_label_values(&[name])
                .set(slots.depth() as i64);
        }
        if let Some(limit) = &backend.adaptive {
            metrics
                .concurrency_limit
                .with_label_values(&[name])
                .set(limit.limit() as i64);
        }
    }
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
        .into_response()
}
