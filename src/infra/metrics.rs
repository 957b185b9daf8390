//! Prometheus metrics behind one typed handle. Labels stay low-cardinality:
//! scopes and kinds, never key names.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A cheap handle: cloned per request and per stream, so one reference
/// count instead of one per metric family.
#[derive(Clone)]
pub struct Metrics(Arc<MetricsSet>);

impl std::ops::Deref for Metrics {
    type Target = MetricsSet;

    fn deref(&self) -> &MetricsSet {
        &self.0
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self(Arc::new(MetricsSet::build()?)))
    }
}

/// Declares the metric families once: each field's type, maker, name, help
/// and labels; `build` makes and registers them all.
macro_rules! metric_set {
    ($($(#[$doc:meta])* $field:ident: $ty:ty = $make:ident($name:literal, $help:literal $(, [$($label:literal),*])?);)*) => {
        pub struct MetricsSet {
            registry: Registry,
            /// Every family's name, exported or not yet sampled.
            names: Arc<Vec<String>>,
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl MetricsSet {
            fn build() -> Result<Self, prometheus::Error> {
                let mut families = Families::default();
                $(let $field = families.$make($name, $help, &[$($($label),*)?])?;)*
                Ok(Self {
                    registry: families.registry,
                    names: Arc::new(families.names),
                    $($field,)*
                })
            }
        }
    };
}

metric_set! {
    /// Requests refused by a rate limit, by scope (key, org, model, deployment) and kind.
    rate_limited: IntCounterVec = counters("sluice_rate_limited_total", "Requests refused by a rate limit", ["scope", "kind"]);
    /// Asynchronous jobs by what happened: `accepted`, `succeeded` (a 2xx
    /// answer stored), `failed` (any other), `callback_delivered`,
    /// `callback_failed`.
    async_jobs: IntCounterVec = counters("sluice_async_jobs_total", "Asynchronous requests accepted, answered (succeeded or failed) and their callbacks", ["result"]);
    /// Rate-limit store (Redis) failures.
    limiter_store_errors: IntCounter = counter("sluice_limiter_store_errors_total", "Rate-limit store (Redis) calls that failed or timed out");
    /// Requests admitted without a limit check because the store failed (fail_open).
    limiter_fail_open: IntCounter = counter("sluice_limiter_fail_open_total", "Requests admitted unchecked because the rate-limit store failed");
    /// Retries, failovers and fallbacks not sent to a deployment because its
    /// quota had no room, by deployment.
    quota_skips: IntCounterVec = counters("sluice_quota_skips_total", "Attempts not sent to a deployment because its quota had no room", ["deployment"]);
    /// Tokens reported by upstreams, by model, deployment and type
    /// (prompt, completion, cached: the prompt tokens the provider's prompt
    /// cache served, which `prefix_affinity` routing aims to raise).
    tokens: IntCounterVec = counters("sluice_tokens_total", "Tokens reported by upstreams", ["model", "deployment", "type"]);
    /// Upstream attempts after the first, by model.
    retries: IntCounterVec = counters("sluice_retries_total", "Upstream attempts after the first", ["model"]);
    /// Requests served by a fallback model, by requested and serving model.
    fallbacks: IntCounterVec = counters("sluice_fallbacks_total", "Requests served by a fallback model", ["from", "to"]);
    /// Cache outcomes: hit, coalesced, miss, bypass.
    cache_requests: IntCounterVec = counters("sluice_cache_requests_total", "Response cache outcomes", ["result"]);
    /// Upstream tokens that cache hits did not spend.
    cache_tokens_saved: IntCounter = counter("sluice_cache_tokens_saved_total", "Upstream tokens that cache hits did not spend");
    cache_store_errors: IntCounter = counter("sluice_cache_store_errors_total", "Cache store failures");
    cache_entries: IntGauge = gauge("sluice_cache_entries", "Entries in the memory cache");
    cache_bytes: IntGauge = gauge("sluice_cache_bytes", "Bytes held by the memory cache");
    /// USD spent, by model (usage times `[pricing]`).
    cost_usd: CounterVec = usd_by("sluice_cost_usd_total", "USD spent, by model (usage times pricing)", ["model"]);
    /// USD that cache hits did not spend.
    cache_cost_saved_usd: Counter = usd("sluice_cache_cost_saved_usd_total", "USD that cache hits did not spend");
    /// Usage records written, dropped (buffer overflow), and store failures.
    ledger_written: IntCounter = counter("sluice_ledger_written_total", "Usage records written to the store (a replayed record already there is not counted)");
    ledger_dropped: IntCounter = counter("sluice_ledger_dropped_total", "Usage records dropped because the ledger buffer was full");
    ledger_store_errors: IntCounter = counter("sluice_ledger_store_errors_total", "Usage store write failures");
    /// Failed journal appends and segment rotations.
    ledger_journal_errors: IntCounter = counter("sluice_ledger_journal_errors_total", "Usage journal appends and rotations that failed");
    /// Age of the oldest record not yet written, in seconds (0 when none).
    ledger_lag: Gauge = float_gauge("sluice_ledger_lag_seconds", "Age of the oldest usage record not yet written to the store (0 when none is held)");
    ledger_pending: IntGauge = gauge("sluice_ledger_pending", "Usage records waiting to be written");
    /// Requests refused because a budget was spent, by scope (key, org).
    budget_rejected: IntCounterVec = counters("sluice_budget_rejected_total", "Requests refused because a budget was spent", ["scope"]);
    /// Budget threshold alerts raised, by scope.
    budget_alerts: IntCounterVec = counters("sluice_budget_alerts_total", "Budget threshold alerts raised", ["scope"]);
    /// Budget counter reads and charges that failed (Redis).
    budget_store_errors: IntCounter = counter("sluice_budget_store_errors_total", "Budget counter reads and charges that failed");
    /// Refused authentication attempts, by reason (missing, invalid,
    /// malformed, throttled): the access log keeps them at debug level.
    auth_failures: IntCounterVec = counters("sluice_auth_failures_total", "Refused authentication attempts, by reason", ["reason"]);
    /// Relayed streams by how they ended (completed, client_closed,
    /// upstream_error, timeout, shutting_down).
    streams: IntCounterVec = counters("sluice_streams_total", "Relayed streams by how they ended", ["outcome"]);
    /// Spans the OTLP collector accepted (`[otel]`).
    trace_spans_exported: IntCounter = counter("sluice_trace_spans_exported_total", "Spans the OTLP collector accepted");
    /// Spans not exported, by reason: `queue_full` (the export queue had no
    /// room), `export_failed` (the collector was down, slow or refusing),
    /// `rejected` (the collector said so in a partial success), `shutdown`
    /// (a call that ended after the exporter's last flush).
    trace_spans_dropped: IntCounterVec = counters("sluice_trace_spans_dropped_total", "Spans not exported, by reason (queue_full, export_failed, rejected, shutdown)", ["reason"]);
    /// Requests by key and status class, only with `[metrics] per_key = true`.
    key_requests: IntCounterVec = counters("sluice_key_requests_total", "Requests by key and status class ([metrics] per_key)", ["key", "status"]);
    /// Requests by route, model, deployment and status class.
    requests: IntCounterVec = counters("sluice_requests_total", "Requests by route, model, deployment and status class", ["route", "model", "deployment", "status"]);
    /// Time to the response head, by route.
    request_duration: HistogramVec = latency("sluice_request_duration_seconds", "Time to the response head", ["route"]);
    /// Time to the first streamed chunk from the upstream, by model.
    time_to_first_token: HistogramVec = latency("sluice_time_to_first_token_seconds", "Time to the first streamed upstream chunk", ["model"]);
    /// Upstream attempt durations (to headers, or whole body when not streamed), by deployment.
    upstream_duration: HistogramVec = latency("sluice_upstream_duration_seconds", "Upstream attempt durations", ["deployment"]);
    /// Gateway time before the upstream answered: total minus upstream time, by route.
    overhead: HistogramVec = overhead("sluice_gateway_overhead_seconds", "Time to the response head minus upstream time", ["route"]);
    in_flight: IntGauge = gauge("sluice_in_flight_requests", "Requests being handled");
    /// Client connections open, all listeners together (`[server] max_connections`).
    connections: IntGauge = gauge("sluice_connections", "Client connections open");
    /// Config reloads by result (`ok`, `invalid`).
    config_reloads: IntCounterVec = counters("sluice_config_reloads_total", "Config reloads by result (ok, invalid)", ["result"]);
    /// 1 for the hash of the config in force (its previous hashes are removed).
    config_info: IntGaugeVec = gauges("sluice_config_info", "1 for the SHA-256 of the config in force", ["hash"]);
    /// Requests whose final attempt went to another deployment than the first, by model.
    failovers: IntCounterVec = counters("sluice_failovers_total", "Requests finished on another deployment than the first tried", ["model"]);
    /// Time spent waiting for a concurrency slot, by class.
    queue_wait: HistogramVec = latency("sluice_queue_wait_seconds", "Time spent waiting for a concurrency slot", ["class"]);
    /// Set when scraped: waiting requests per queue, breaker state and last
    /// reported headroom per deployment.
    queue_depth: IntGaugeVec = gauges("sluice_queue_depth", "Requests waiting for a slot", ["queue"]);
    circuit_state: IntGaugeVec = gauges("sluice_circuit_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open", ["deployment"]);
    /// Each model's degradation level, 0 (full service) to 4 (maintenance).
    degradation_level: IntGaugeVec = gauges("sluice_degradation_level", "Degradation level per model: 0 full, 1 reduced, 2 cached only, 3 static, 4 maintenance", ["model"]);
    remaining_requests: IntGaugeVec = gauges("sluice_upstream_remaining_requests", "x-ratelimit-remaining-requests as last reported", ["deployment"]);
    remaining_tokens: IntGaugeVec = gauges("sluice_upstream_remaining_tokens", "x-ratelimit-remaining-tokens as last reported", ["deployment"]);
    /// The share of quota a deployment last reported left, which scales its
    /// routing weight (100 when it reports none or its window has reset).
    headroom: IntGaugeVec = gauges("sluice_deployment_headroom_percent", "Share of its quota a deployment last reported left (scales its routing weight)", ["deployment"]);
    /// `auto` router decisions, by tier model.
    auto_decisions: IntCounterVec = counters("sluice_auto_decisions_total", "auto router decisions by tier", ["tier"]);
    /// Split (canary) requests by split, variant and outcome (ok, client_error, server_error).
    split_requests: IntCounterVec = counters("sluice_split_requests_total", "Split requests by variant and outcome", ["split", "variant", "outcome"]);
    split_latency: HistogramVec = histogram("sluice_split_latency_seconds", "Split request latency to the response head", ["split", "variant"]);
    /// Batch lines by result: completed, failed (recorded), retried (429 or
    /// overload: sent again later), expired.
    batch_lines: IntCounterVec = counters("sluice_batch_lines_total", "Batch lines by result (completed, failed, retried, expired)", ["result"]);
    /// Batch lines in flight on this replica.
    batch_lines_in_flight: IntGauge = gauge("sluice_batch_lines_in_flight", "Batch lines being sent by this replica");
    /// The adaptive limits of the batches this replica runs, summed.
    batch_line_limit: IntGauge = gauge("sluice_batch_line_limit", "Adaptive limits on batch lines in flight, summed over the batches this replica runs");
    /// A deployment's concurrency limit (`concurrency = "adaptive"`), set
    /// when it moves and when scraped.
    concurrency_limit: IntGaugeVec = gauges("sluice_deployment_concurrency_limit", "Adaptive concurrency limit of a deployment", ["deployment"]);
    /// Moves of an adaptive limit, by deployment and direction (up, down).
    concurrency_changes: IntCounterVec = counters("sluice_deployment_concurrency_changes_total", "Moves of a deployment's adaptive concurrency limit (up, down)", ["deployment", "direction"]);
    /// Push-back (429, or 503 with a hint) that spent no attempt: an
    /// adaptive limit took it as a smaller limit, or a realtime call waited
    /// out a full deployment's short hint.
    absorbed_pushback: IntCounterVec = counters("sluice_absorbed_pushback_total", "Push-back answers absorbed: the call tried again without spending an attempt (an adaptive limit shrank, or a realtime call waited a short hint)", ["deployment"]);
    /// Hedged-request decisions, by model and result: `primary_won`,
    /// `hedge_won`, `hedge_failed`, `no_budget`, `no_deployment`.
    hedges: IntCounterVec = counters("sluice_hedges_total", "Calls whose first token was late enough to hedge, by model and result", ["model", "result"]);
}

/// Buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The gateway's own time per call is tens of microseconds: buckets from
/// 10 µs, fine where that figure moves, up to the waits a queue can add.
const OVERHEAD_BUCKETS: [f64; 20] = [
    0.00001, 0.00002, 0.00003, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Makes metric families and registers each as it is made.
#[derive(Default)]
struct Families {
    registry: Registry,
    names: Vec<String>,
}

type Made<T> = Result<T, prometheus::Error>;

impl Families {
    fn add<C: Collector + Clone + 'static>(&mut self, collector: Made<C>) -> Made<C> {
        let collector = collector?;
        self.names
            .extend(collector.desc().iter().map(|desc| desc.fq_name.clone()));
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    fn counter(&mut self, name: &str, help: &str, _: &[&str]) -> Made<IntCounter> {
        self.add(IntCounter::new(name, help))
    }

    fn counters(&mut self, name: &str, help: &str, labels: &[&str]) -> Made<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge(&mut self, name: &str, help: &str, _: &[&str]) -> Made<IntGauge> {
        self.add(IntGauge::new(name, help))
    }

    fn gauges(&mut self, name: &str, help: &str, labels: &[&str]) -> Made<IntGaugeVec> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn float_gauge(&mut self, name: &str, help: &str, _: &[&str]) -> Made<Gauge> {
        self.add(Gauge::new(name, help))
    }

    fn usd(&mut self, name: &str, help: &str, _: &[&str]) -> Made<Counter> {
        self.add(Counter::new(name, help))
    }

    fn usd_by(&mut self, name: &str, help: &str, labels: &[&str]) -> Made<CounterVec> {
        self.add(CounterVec::new(Opts::new(name, help), labels))
    }

    fn latency(&mut self, name: &str, help: &str, labels: &[&str]) -> Made<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels))
    }

    fn overhead(&mut self, name: &str, help: &str, labels: &[&str]) -> Made<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(OVERHEAD_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels))
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[&str]) -> Made<HistogramVec> {
        self.add(HistogramVec::new(HistogramOpts::new(name, help), labels))
    }
}

impl MetricsSet {
    pub fn record_usage(
        &self,
        model: &str,
        deployment: &str,
        usage: &crate::vocab::Usage,
        cost: f64,
    ) {
        if cost > 0.0 {
            self.cost_usd.with_label_values(&[model]).inc_by(cost);
        }
        let count = |kind: &str, value: u64| {
            if value > 0 {
                self.tokens
                    .with_label_values(&[model, deployment, kind])
                    .inc_by(value);
            }
        };
        count("prompt", usage.prompt_tokens);
        count("completion", usage.completion_tokens);
        count("cached", usage.cached_tokens);
    }

    /// Every metric family Sluice defines (labelled ones appear in the
    /// exposition only once sampled).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
