//! `/admin/*`: operator views, behind `[admin] token` (Bearer). Registered
//! only when a token is configured.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{KeyDigest, sha256};
use crate::error::{GatewayError, error_body, json_response};
use crate::routing::ModelRouter;

/// The admin token, kept only as a digest.
#[derive(Clone)]
pub struct AdminToken(pub KeyDigest);

pub async fn require_token(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if sha256(presented.trim()) == token.0 => next.run(request).await,
        Some(_) => GatewayError::InvalidApiKey {
            masked: "(admin token)".into(),
        }
        .into_response(),
        None => json_response(
            StatusCode::UNAUTHORIZED,
            error_body(
                "The admin API needs `Authorization: Bearer <admin token>`.",
                "invalid_request_error",
                None,
                None,
            ),
        ),
    }
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
    ewma_latency_ms: f64,
    in_flight: u32,
}

pub async fn deployments(State(router): State<Arc<ModelRouter>>) -> Response {
    let now = Instant::now();
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
                ewma_latency_ms: health.ewma_latency().as_secs_f64() * 1000.0,
                in_flight: health.in_flight(),
            }
        })
        .collect();
    let body = serde_json::json!({"object": "list", "data": data});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}
