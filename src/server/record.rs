//! Request metrics: counts by route, model, deployment and status class;
//! time to the response head; gateway overhead (that time minus upstream
//! time, which the dispatcher reports); requests in flight.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;

use crate::infra::sync_layer::Middleware;

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

/// Layer 4b: a `Middleware`, so the inner service is called in place.
#[derive(Clone)]
pub struct Record(pub Metrics);

/// What `Record` keeps from the request to its response head. Counted in
/// flight until dropped, so a client that leaves before the response head
/// (the future is dropped) is counted out too.
pub struct Timing {
    metrics: Metrics,
    path_label: &'static str,
    started: Instant,
}

impl Drop for Timing {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl Middleware for Record {
    type Carry = Timing;

    fn before(&self, request: &mut Request) -> Result<Timing, Box<Response>> {
        self.0.in_flight.inc();
        Ok(Timing {
            metrics: self.0.clone(),
            path_label: route_label(request.uri().path()),
            started: Instant::now(),
        })
    }

    fn after(timing: Timing, response: &mut Response) {
        let elapsed = timing.started.elapsed();
        let metrics = &timing.metrics;
        // A matched route's template (`/openai/deployments/{deployment}/...`,
        // `/v1/responses/{id}`) is as bounded as the list.
        let route = response
            .extensions()
            .get::<MatchedPath>()
            .map_or(timing.path_label, MatchedPath::as_str);
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
