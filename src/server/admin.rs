//! `/admin/*`: operator views, behind `[admin] token` (Bearer). Registered
//! only when a token is configured.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{StatusCode, header};
use serde::Serialize;
use tokio::time::Instant;

use crate::auth::{AuthGuard, Presented, presented_key};
use crate::config::{KeyDigest, sha256};
use crate::drain::refuse_after_drain;
use crate::error::{GatewayError, error_body, json_response, set_retry_after};
use crate::ledger::{Ledger, StoreError};
use crate::metering::Budgets;
use crate::routing::ModelRouter;

/// The admin token, kept only as a digest, and the throttle of failed
/// attempts it shares with the API keys.
#[derive(Clone)]
pub struct AdminToken {
    pub digest: KeyDigest,
    pub guard: AuthGuard,
}

pub async fn require_token(
    State(token): State<AdminToken>,
    request: Request,
    next: Next,
) -> Response {
    check_token(&token, request, next).await
}

/// Runs `next` when the request carries the admin token; else 401 (or 429
/// past the failed-attempt throttle).
pub async fn check_token(token: &AdminToken, request: Request, next: Next) -> Response {
    if let Err(refused) = token.guard.admit(&request) {
        return refuse_after_drain(request, *refused).await;
    }
    // Read the way API keys are, so a client that reaches /v1 reaches /admin.
    let refused = match presented_key(request.headers()) {
        Presented::Key(presented) if sha256(presented) == token.digest => {
            return next.run(request).await;
        }
        Presented::Absent => {
            let mut refused = token.guard.refuse(&request, GatewayError::MissingApiKey);
            *refused.body_mut() = axum::body::Body::from(error_body(
                "The admin API needs `Authorization: Bearer <admin token>`.",
                "invalid_request_error",
                None,
                None,
            ));
            refused
        }
        Presented::Key(_) | Presented::Malformed => token.guard.refuse(
            &request,
            GatewayError::InvalidApiKey {
                masked: "(admin token)".into(),
            },
        ),
    };
    refuse_after_drain(request, refused).await
}

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

#[derive(serde::Deserialize)]
pub struct UsageQuery {
    #[serde(default = "default_group")]
    group_by: String,
    /// `YYYY-MM-DD` (UTC) or unix milliseconds; inclusive.
    from: Option<String>,
    /// `YYYY-MM-DD` (UTC, exclusive) or unix milliseconds.
    to: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn default_group() -> String {
    "key".to_owned()
}

/// Parses `2026-11-22` or unix milliseconds.
fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let parts: Vec<u32> = text
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [year, month, day] = parts[..] else {
        return None;
    };
    crate::metering::date_ms(i64::from(year), month, day)
}

/// `GET /admin/usage?group_by=key|org|model|deployment|tag|day&from=&to=&format=csv`
pub async fn usage(State(views): State<Views>, Query(query): Query<UsageQuery>) -> Response {
    let Some(ledger) = &views.ledger else {
        return GatewayError::invalid("The usage ledger is off ([usage] store = \"none\").", None)
            .into_response();
    };
    let bound = |text: &Option<String>, default: i64| match text {
        Some(text) => parse_time(text).ok_or(()),
        None => Ok(default),
    };
    let (Ok(from), Ok(to)) = (bound(&query.from, 0), bound(&query.to, i64::MAX)) else {
        return GatewayError::invalid(
            "`from` and `to` take YYYY-MM-DD or unix milliseconds.",
            Some("from"),
        )
        .into_response();
    };
    let totals = match ledger.store().totals(&query.group_by, from, to).await {
        Ok(totals) => totals,
        Err(error @ StoreError::UnknownGroup(_)) => {
            return GatewayError::invalid(error.to_string(), Some("group_by")).into_response();
        }
        Err(StoreError::Unavailable(error)) => return store_unavailable(&error),
    };
    if query.format.as_deref() == Some("csv") {
        let mut csv =
            String::from("group,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n");
        for t in &totals {
            let group = csv_cell(&t.group);
            csv.push_str(&format!(
                "\"{group}\",{},{},{},{},{:.6}\n",
                t.requests, t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.cost_usd
            ));
        }
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/csv")], csv).into_response();
    }
    let body = serde_json::json!({"object": "list", "group_by": query.group_by, "data": totals});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// A text cell's content for a quoted CSV field. Group names come from
/// clients (tags, model names), so one starting like a formula (`=`, `+`,
/// `-`, `@`, or a tab or CR that some spreadsheets skip first) gets a
/// leading `'`, which spreadsheets show as text instead of evaluating.
fn csv_cell(text: &str) -> String {
    let quoted = text.replace('"', "\"\"");
    if quoted.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{quoted}")
    } else {
        quoted
    }
}

/// 503 while the usage store is unreachable: the caller may retry, unlike a
/// 400. The store's own error is logged, not returned (it may name hosts).
fn store_unavailable(error: &str) -> Response {
    tracing::warn!(%error, "usage report failed: the usage store is unreachable");
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        error_body(
            "The usage store is unreachable right now; please try again shortly.",
            "server_error",
            None,
            Some("usage_store_unavailable"),
        ),
    );
    set_retry_after(response.headers_mut(), std::time::Duration::from_secs(5));
    response
}

/// `GET /admin/budgets`: spend against each configured budget.
pub async fn budgets(State(views): State<Views>) -> Response {
    let data = match &views.budgets {
        Some(budgets) => budgets.report().await,
        None => Vec::new(),
    };
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(csv_cell("team-a"), "team-a");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"\"x\"\")");
        for text in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_cell(text).starts_with('\''), "{text:?}");
        }
    }
}
