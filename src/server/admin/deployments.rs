//! `GET /admin/deployments`: each deployment's health, breaker, throttle,
//! headroom and concurrency, and the state the other views read.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

use crate::engines::ledger::Ledger;
use crate::engines::metering::Budgets;
use crate::engines::routing::ModelRouter;
use crate::vocab::error::json_response;

/// A deployment's concurrency slots: the limit (learnt, when adaptive),
/// its bounds, and the calls holding or waiting for a slot.
#[derive(Serialize)]
struct ConcurrencyView {
    mode: &'static str,
    limit: usize,
    min: usize,
    max: usize,
    in_use: usize,
    queued: usize,
}

#[derive(Serialize)]
struct DeploymentView<'a> {
    name: &'a str,
    provider: &'a str,
    priority: i32,
    weight: u32,
    usable: bool,
    /// Why not, when not: throttled, no_headroom, circuit_open.
    reason: Option<&'a str>,
    /// Milliseconds until usable again (0 when usable).
    usable_in_ms: u64,
    circuit: &'a str,
    remaining_requests: Option<u64>,
    remaining_tokens: Option<u64>,
    /// The share of quota left that scales the routing weight (0.05 to 1).
    headroom: f64,
    ewma_latency_ms: f64,
    in_flight: u32,
    /// `null` when the deployment has no concurrency limit.
    concurrency: Option<ConcurrencyView>,
}

/// What the admin views read.
#[derive(Clone)]
pub struct Views {
    pub router: Arc<ModelRouter>,
    pub ledger: Option<Arc<Ledger>>,
    pub budgets: Option<Arc<Budgets>>,
    /// The batch and async job store, when batches or async requests are on.
    pub jobs: Option<Arc<crate::engines::jobs::Jobs>>,
}

pub async fn deployments(State(views): State<Views>) -> Response {
    let now = Instant::now();
    let router = &views.router;
    let data: Vec<DeploymentView<'_>> = router
        .backends()
        .iter()
        .map(|backend| {
            let health = &backend.health;
            let usable = health.usable(now);
            let (remaining_requests, remaining_tokens) = health.remaining();
            DeploymentView {
                name: &backend.deployment.name,
                provider: backend.deployment.provider.as_str(),
                priority: backend.deployment.priority,
                weight: backend.deployment.weight,
                usable: usable.is_ok(),
                reason: usable.err().map(|u| u.reason()),
                usable_in_ms: usable.err().map_or(0, |u| {
                    u.until().saturating_duration_since(now).as_millis() as u64
                }),
                circuit: health.breaker_state().as_str(),
                remaining_requests,
                remaining_tokens,
                headroom: health.headroom(now),
                ewma_latency_ms: health.ewma_latency().as_secs_f64() * 1000.0,
                in_flight: health.in_flight(),
                concurrency: backend.slots.as_ref().map(|slots| {
                    let (mode, (min, max)) = match &backend.adaptive {
                        Some(limit) => ("adaptive", limit.bounds()),
                        None => ("fixed", (slots.capacity(), slots.capacity())),
                    };
                    ConcurrencyView {
                        mode,
                        limit: slots.capacity(),
                        min,
                        max,
                        in_use: slots.in_use(),
                        queued: slots.depth(),
                    }
                }),
            }
        })
        .collect();
    let body = serde_json::json!({"object": "list", "data": data});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}
