//! Request metrics: counts by route, model, deployment and status class;
//! time to the response head; gateway overhead (that time minus upstream
//! time, which the dispatcher reports); requests in flight.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};

use crate::infra::sync_layer::Middleware;
use axum::middleware::Next;
use axum::response::Response;

use crate::infra::metrics::Metrics;
use crate::vocab::{ServedBy, UpstreamTime};

/// Known routes keep their path as the label; anything else is `other`, so
/// scanners cannot blow up label cardinality.
fn route_label(path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/deployments",
        "/admin/usage",
        "/admin/budgets",
    ];
    ROUTES
        .iter()
        .find(|route| **route == path)
        .copied()
        .unwrap_or(if path.starts_with("/v1/models/") {
            "/v1/models/{model}"
        } else {
            "other"
        })
}

/// Hands the matched route's template to `record`, which runs outside the
/// snapshot's router (routes are matched inside it) and reads it from the
/// response.
#[derive(Clone)]
pub struct KeepRoute;

impl Middleware for KeepRoute {
    type Carry = Option<MatchedPath>;

    fn before(&self, request: &mut Request) -> Result<Self::Carry, Box<Response>> {
        Ok(request.extensions().get::<MatchedPath>().cloned())
    }

    fn after(matched: Self::Carry, response: &mut Response) {
        if let Some(matched) = matched {
            response.extensions_mut().insert(matched);
        }
    }
}

pub async fn record(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let path_label = route_label(request.uri().path());
    let started = Instant::now();
    let in_flight = InFlight::enter(&metrics.in_flight);
    let response = next.run(request).await;
    drop(in_flight);
    // A matched route's template (`/openai/deployments/{deployment}/...`,
    // `/v1/responses/{id}`) is as bounded as the list.
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or(path_label, MatchedPath::as_str);
    let elapsed = started.elapsed();
    let served = response.extensions().get::<ServedBy>();
    let status = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics
        .requests
        .with_label_values(&[
            route,
            served.map_or("-", |s| &*s.model),
            served.map_or("-", |s| &*s.deployment),
            status,
        ])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
    if let Some(UpstreamTime(upstream)) = response.extensions().get::<UpstreamTime>() {
        let overhead = elapsed.saturating_sub(*upstream);
        metrics
            .overhead
            .with_label_values(&[route])
            .observe(overhead.as_secs_f64());
    }
    response
}

/// Counts a request in flight until dropped, so a client that leaves before
/// the response head (the future is dropped mid-`await`) is counted out too.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(route_label("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(route_label("/v1/models/gpt-4o"), "/v1/models/{model}");
        assert_eq!(route_label("/admin/budgets"), "/admin/budgets");
        assert_eq!(route_label("/wp-admin.php"), "other");
    }
}
