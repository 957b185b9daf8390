//! `GET /admin/overview`: the gateway's counters at a glance, as JSON, for
//! a reader that cannot scrape `/metrics` (on a listener of its own, or
//! in Prometheus' text format): API requests by status class, the latency
//! and gateway-overhead histograms summed over the API's routes, tokens by
//! type, cost, and what is in flight. Everything is cumulative since start;
//! a reader polling it gets rates and recent quantiles from differences
//! (the admin console does).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::infra::metrics::Metrics;
use crate::vocab::error::{GatewayError, json_response};

/// A histogram summed over its series: cumulative counts per upper bound.
#[derive(Serialize, Default)]
struct Histogram {
    /// `[upper bound in seconds, calls at or under it]`, bounds ascending.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

#[derive(Serialize)]
struct Overview {
    object: &'static str,
    /// API calls by status class (`2xx`...), and all of them.
    requests: std::collections::BTreeMap<&'static str, u64>,
    latency_seconds: Histogram,
    overhead_seconds: Histogram,
    /// Upstream tokens by type: `prompt`, `completion`, `cached`.
    tokens: std::collections::BTreeMap<String, u64>,
    cost_usd: f64,
    in_flight: i64,
    connections: i64,
}

pub async fn overview(State(metrics): State<Metrics>) -> Response {
    let requests = requests_by_class(&metrics.requests.collect());
    let overview = Overview {
        object: "overview",
        requests,
        latency_seconds: summed(&metrics.request_duration.collect()),
        overhead_seconds: summed(&metrics.overhead.collect()),
        tokens: by_label(&metrics.tokens.collect(), "type"),
        cost_usd: metrics
            .cost_usd
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value())
            .sum(),
        in_flight: metrics.in_flight.get(),
        connections: metrics.connections.get(),
    };
    match serde_json::to_vec(&overview) {
        Ok(body) => json_response(StatusCode::OK, Bytes::from(body)),
        Err(_) => GatewayError::Internal.into_response(),
    }
}

/// The calls the API served: not health checks, scrapes or admin calls.
fn api_route(route: &str) -> bool {
    route.starts_with("/v1") || route.starts_with("/openai")
}

fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.name() == name)
        .map_or("", |pair| pair.value())
}

fn requests_by_class(families: &[MetricFamily]) -> std::collections::BTreeMap<&'static str, u64> {
    let mut classes = std::collections::BTreeMap::new();
    for metric in families.iter().flat_map(|family| family.get_metric()) {
        if !api_route(label(metric, "route")) {
            continue;
        }
        let class = match label(metric, "status") {
            "2xx" => "2xx",
            "4xx" => "4xx",
            "5xx" => "5xx",
            _ => "other",
        };
        let calls = metric.get_counter().get_value() as u64;
        *classes.entry(class).or_insert(0) += calls;
        *classes.entry("total").or_insert(0) += calls;
    }
    classes
}

/// The histogram series of the API's routes, summed bucket by bucket.
fn summed(families: &[MetricFamily]) -> Histogram {
    let mut total = Histogram::default();
    for metric in families.iter().flat_map(|family| family.get_metric()) {
        if !api_route(label(metric, "route")) {
            continue;
        }
        let histogram = metric.get_histogram();
        total.count += histogram.get_sample_count();
        total.sum += histogram.get_sample_sum();
        for (index, bucket) in histogram.get_bucket().iter().enumerate() {
            let count = bucket.cumulative_count();
            match total.buckets.get_mut(index) {
                Some((_, summed)) => *summed += count,
                None => total.buckets.push((bucket.upper_bound(), count)),
            }
        }
    }
    total
}

fn by_label(families: &[MetricFamily], name: &str) -> std::collections::BTreeMap<String, u64> {
    let mut totals = std::collections::BTreeMap::new();
    for metric in families.iter().flat_map(|family| family.get_metric()) {
        *totals.entry(label(metric, name).to_owned()).or_insert(0) +=
            metric.get_counter().get_value() as u64;
    }
    totals
}
