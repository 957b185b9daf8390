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

pub struct MetricsSet {
    registry: Registry,
    /// Every family's name, exported or not yet sampled.
    names: Arc<Vec<String>>,
    /// Requests refused by a rate limit, by scope (key, org, model, deployment) and kind.
    pub rate_limited: IntCounterVec,
    /// Asynchronous jobs by what happened: `accepted`, `succeeded` (a 2xx
    /// answer stored), `failed` (any other), `callback_delivered`,
    /// `callback_failed`.
    pub async_jobs: IntCounterVec,
    /// Rate-limit store (Redis) failures.
    pub limiter_store_errors: IntCounter,
    /// Requests admitted without a limit check because the store failed (fail_open).
    pub limiter_fail_open: IntCounter,
    /// Retries, failovers and fallbacks not sent to a deployment because its
    /// quota had no room, by deployment.
    pub quota_skips: IntCounterVec,
    /// Tokens reported by upstreams, by model, deployment and type
    /// (prompt, completion, cached: the prompt tokens the provider's prompt
    /// cache served, which `prefix_affinity` routing aims to raise).
    pub tokens: IntCounterVec,
    /// Upstream attempts after the first, by model.
    pub retries: IntCounterVec,
    /// Requests served by a fallback model, by requested and serving model.
    pub fallbacks: IntCounterVec,
    /// Cache outcomes: hit, coalesced, miss, bypass.
    pub cache_requests: IntCounterVec,
    /// Upstream tokens that cache hits did not spend.
    pub cache_tokens_saved: IntCounter,
    pub cache_store_errors: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    /// USD spent, by model (usage times `[pricing]`).
    pub cost_usd: CounterVec,
    /// USD that cache hits did not spend.
    pub cache_cost_saved_usd: Counter,
    /// Usage records written, dropped (buffer overflow), and store failures.
    pub ledger_written: IntCounter,
    pub ledger_dropped: IntCounter,
    pub ledger_store_errors: IntCounter,
    /// Failed journal appends and segment rotations.
    pub ledger_journal_errors: IntCounter,
    /// Age of the oldest record not yet written, in seconds (0 when none).
    pub ledger_lag: Gauge,
    pub ledger_pending: IntGauge,
    /// Requests refused because a budget was spent, by scope (key, org).
    pub budget_rejected: IntCounterVec,
    /// Budget threshold alerts raised, by scope.
    pub budget_alerts: IntCounterVec,
    /// Budget counter reads and charges that failed (Redis).
    pub budget_store_errors: IntCounter,
    /// Refused authentication attempts, by reason (missing, invalid,
    /// malformed, throttled): the access log keeps them at debug level.
    pub auth_failures: IntCounterVec,
    /// Relayed streams by how they ended (completed, client_closed,
    /// upstream_error, timeout, shutting_down).
    pub streams: IntCounterVec,
    /// Requests by key and status class, only with `[metrics] per_key = true`.
    pub key_requests: IntCounterVec,
    /// Requests by route, model, deployment and status class.
    pub requests: IntCounterVec,
    /// Time to the response head, by route.
    pub request_duration: HistogramVec,
    /// Time to the first streamed chunk from the upstream, by model.
    pub time_to_first_token: HistogramVec,
    /// Upstream attempt durations (to headers, or whole body when not streamed), by deployment.
    pub upstream_duration: HistogramVec,
    /// Gateway time before the upstream answered: total minus upstream time, by route.
    pub overhead: HistogramVec,
    pub in_flight: IntGauge,
    /// Client connections open, all listeners together (`[server] max_connections`).
    pub connections: IntGauge,
    /// Config reloads by result (`ok`, `invalid`).
    pub config_reloads: IntCounterVec,
    /// 1 for the hash of the config in force (its previous hashes are removed).
    pub config_info: IntGaugeVec,
    /// Requests whose final attempt went to another deployment than the first, by model.
    pub failovers: IntCounterVec,
    /// Time spent waiting for a concurrency slot, by class.
    pub queue_wait: HistogramVec,
    /// Set when scraped: waiting requests per queue, breaker state and last
    /// reported headroom per deployment.
    pub queue_depth: IntGaugeVec,
    pub circuit_state: IntGaugeVec,
    /// Each model's degradation level, 0 (full service) to 4 (maintenance).
    pub degradation_level: IntGaugeVec,
    pub remaining_requests: IntGaugeVec,
    pub remaining_tokens: IntGaugeVec,
    /// `auto` router decisions, by tier model.
    pub auto_decisions: IntCounterVec,
    /// Split (canary) requests by split, variant and outcome (ok, client_error, server_error).
    pub split_requests: IntCounterVec,
    pub split_latency: HistogramVec,
    /// Batch lines by result: completed, failed (recorded), retried (429 or
    /// overload: sent again later), expired.
    pub batch_lines: IntCounterVec,
    /// Batch lines in flight on this replica.
    pub batch_lines_in_flight: IntGauge,
    /// The adaptive limits of the batches this replica runs, summed.
    pub batch_line_limit: IntGauge,
    /// A deployment's concurrency limit (`concurrency = "adaptive"`), set
    /// when it moves and when scraped.
    pub concurrency_limit: IntGaugeVec,
    /// Moves of an adaptive limit, by deployment and direction (up, down).
    pub concurrency_changes: IntCounterVec,
}

impl MetricsSet {
    fn build() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "sluice_rate_limited_total",
                "Requests refused by a rate limit",
            ),
            &["scope", "kind"],
        )?;
        let limiter_store_errors = IntCounter::new(
            "sluice_limiter_store_errors_total",
            "Rate-limit store (Redis) calls that failed or timed out",
        )?;
        let quota_skips = IntCounterVec::new(
            Opts::new(
                "sluice_quota_skips_total",
                "Attempts not sent to a deployment because its quota had no room",
            ),
            &["deployment"],
        )?;
        let limiter_fail_open = IntCounter::new(
            "sluice_limiter_fail_open_total",
            "Requests admitted unchecked because the rate-limit store failed",
        )?;
        let tokens = IntCounterVec::new(
            Opts::new("sluice_tokens_total", "Tokens reported by upstreams"),
            &["model", "deployment", "type"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("sluice_retries_total", "Upstream attempts after the first"),
            &["model"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "sluice_fallbacks_total",
                "Requests served by a fallback model",
            ),
            &["from", "to"],
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new("sluice_cache_requests_total", "Response cache outcomes"),
            &["result"],
        )?;
        let cache_tokens_saved = IntCounter::new(
            "sluice_cache_tokens_saved_total",
            "Upstream tokens that cache hits did not spend",
        )?;
        let cache_store_errors =
            IntCounter::new("sluice_cache_store_errors_total", "Cache store failures")?;
        let cache_entries = IntGauge::new("sluice_cache_entries", "Entries in the memory cache")?;
        let cache_bytes = IntGauge::new("sluice_cache_bytes", "Bytes held by the memory cache")?;
        let auto_decisions = IntCounterVec::new(
            Opts::new(
                "sluice_auto_decisions_total",
                "auto router decisions by tier",
            ),
            &["tier"],
        )?;
        let split_requests = IntCounterVec::new(
            Opts::new(
                "sluice_split_requests_total",
                "Split requests by variant and outcome",
            ),
            &["split", "variant", "outcome"],
        )?;
        let split_latency = HistogramVec::new(
            HistogramOpts::new(
                "sluice_split_latency_seconds",
                "Split request latency to the response head",
            ),
            &["split", "variant"],
        )?;
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ];
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.clone()),
                labels,
            )
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_requests_total",
                "Requests by route, model, deployment and status class",
            ),
            &["route", "model", "deployment", "status"],
        )?;
        let request_duration = histogram(
            "sluice_request_duration_seconds",
            "Time to the response head",
            &["route"],
        )?;
        let time_to_first_token = histogram(
            "sluice_time_to_first_token_seconds",
            "Time to the first streamed upstream chunk",
            &["model"],
        )?;
        let upstream_duration = histogram(
            "sluice_upstream_duration_seconds",
            "Upstream attempt durations",
            &["deployment"],
        )?;
        let overhead = histogram(
            "sluice_gateway_overhead_seconds",
            "Time to the response head minus upstream time",
            &["route"],
        )?;
        let in_flight = IntGauge::new("sluice_in_flight_requests", "Requests being handled")?;
        let batch_lines = IntCounterVec::new(
            Opts::new(
                "sluice_batch_lines_total",
                "Batch lines by result (completed, failed, retried, expired)",
            ),
            &["result"],
        )?;
        let batch_lines_in_flight = IntGauge::new(
            "sluice_batch_lines_in_flight",
            "Batch lines being sent by this replica",
        )?;
        let batch_line_limit = IntGauge::new(
            "sluice_batch_line_limit",
            "Adaptive limits on batch lines in flight, summed over the batches this replica runs",
        )?;
        let concurrency_limit = IntGaugeVec::new(
            Opts::new(
                "sluice_deployment_concurrency_limit",
                "Adaptive concurrency limit of a deployment",
            ),
            &["deployment"],
        )?;
        let concurrency_changes = IntCounterVec::new(
            Opts::new(
                "sluice_deployment_concurrency_changes_total",
                "Moves of a deployment's adaptive concurrency limit (up, down)",
            ),
            &["deployment", "direction"],
        )?;
        let connections = IntGauge::new("sluice_connections", "Client connections open")?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "sluice_config_reloads_total",
                "Config reloads by result (ok, invalid)",
            ),
            &["result"],
        )?;
        let config_info = IntGaugeVec::new(
            Opts::new(
                "sluice_config_info",
                "1 for the SHA-256 of the config in force",
            ),
            &["hash"],
        )?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "sluice_failovers_total",
                "Requests finished on another deployment than the first tried",
            ),
            &["model"],
        )?;
        let queue_wait = histogram(
            "sluice_queue_wait_seconds",
            "Time spent waiting for a concurrency slot",
            &["class"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("sluice_queue_depth", "Requests waiting for a slot"),
            &["queue"],
        )?;
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "sluice_circuit_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            ),
            &["deployment"],
        )?;
        let degradation_level = IntGaugeVec::new(
            Opts::new(
                "sluice_degradation_level",
                "Degradation level per model: 0 full, 1 reduced, 2 cached only, 3 static, 4 maintenance",
            ),
            &["model"],
        )?;
        let remaining_requests = IntGaugeVec::new(
            Opts::new(
                "sluice_upstream_remaining_requests",
                "x-ratelimit-remaining-requests as last reported",
            ),
            &["deployment"],
        )?;
        let remaining_tokens = IntGaugeVec::new(
            Opts::new(
                "sluice_upstream_remaining_tokens",
                "x-ratelimit-remaining-tokens as last reported",
            ),
            &["deployment"],
        )?;
        let cost_usd = CounterVec::new(
            Opts::new(
                "sluice_cost_usd_total",
                "USD spent, by model (usage times pricing)",
            ),
            &["model"],
        )?;
        let cache_cost_saved_usd = Counter::new(
            "sluice_cache_cost_saved_usd_total",
            "USD that cache hits did not spend",
        )?;
        let budget_rejected = IntCounterVec::new(
            Opts::new(
                "sluice_budget_rejected_total",
                "Requests refused because a budget was spent",
            ),
            &["scope"],
        )?;
        let budget_alerts = IntCounterVec::new(
            Opts::new(
                "sluice_budget_alerts_total",
                "Budget threshold alerts raised",
            ),
            &["scope"],
        )?;
        let budget_store_errors = IntCounter::new(
            "sluice_budget_store_errors_total",
            "Budget counter reads and charges that failed",
        )?;
        let streams = IntCounterVec::new(
            Opts::new("sluice_streams_total", "Relayed streams by how they ended"),
            &["outcome"],
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "sluice_auth_failures_total",
                "Refused authentication attempts, by reason",
            ),
            &["reason"],
        )?;
        let ledger_written = IntCounter::new(
            "sluice_ledger_written_total",
            "Usage records written to the store (a replayed record already there is not counted)",
        )?;
        let ledger_dropped = IntCounter::new(
            "sluice_ledger_dropped_total",
            "Usage records dropped because the ledger buffer was full",
        )?;
        let ledger_store_errors = IntCounter::new(
            "sluice_ledger_store_errors_total",
            "Usage store write failures",
        )?;
        let ledger_journal_errors = IntCounter::new(
            "sluice_ledger_journal_errors_total",
            "Usage journal appends and rotations that failed",
        )?;
        let ledger_lag = Gauge::new(
            "sluice_ledger_lag_seconds",
            "Age of the oldest usage record not yet written to the store (0 when none is held)",
        )?;
        let ledger_pending = IntGauge::new(
            "sluice_ledger_pending",
            "Usage records waiting to be written",
        )?;
        let key_requests = IntCounterVec::new(
            Opts::new(
                "sluice_key_requests_total",
                "Requests by key and status class ([metrics] per_key)",
            ),
            &["key", "status"],
        )?;
        let async_jobs = IntCounterVec::new(
            Opts::new(
                "sluice_async_jobs_total",
                "Asynchronous requests accepted, answered (succeeded or failed) and their callbacks",
            ),
            &["result"],
        )?;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(async_jobs.clone()),
            Box::new(key_requests.clone()),
            Box::new(ledger_written.clone()),
            Box::new(ledger_dropped.clone()),
            Box::new(ledger_store_errors.clone()),
            Box::new(ledger_journal_errors.clone()),
            Box::new(ledger_lag.clone()),
            Box::new(ledger_pending.clone()),
            Box::new(budget_rejected.clone()),
            Box::new(budget_alerts.clone()),
            Box::new(budget_store_errors.clone()),
            Box::new(auth_failures.clone()),
            Box::new(streams.clone()),
            Box::new(cost_usd.clone()),
            Box::new(cache_cost_saved_usd.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(time_to_first_token.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(overhead.clone()),
            Box::new(in_flight.clone()),
            Box::new(batch_lines.clone()),
            Box::new(batch_lines_in_flight.clone()),
            Box::new(batch_line_limit.clone()),
            Box::new(concurrency_limit.clone()),
            Box::new(concurrency_changes.clone()),
            Box::new(connections.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_info.clone()),
            Box::new(failovers.clone()),
            Box::new(queue_wait.clone()),
            Box::new(queue_depth.clone()),
            Box::new(circuit_state.clone()),
            Box::new(degradation_level.clone()),
            Box::new(remaining_requests.clone()),
            Box::new(remaining_tokens.clone()),
            Box::new(auto_decisions.clone()),
            Box::new(split_requests.clone()),
            Box::new(split_latency.clone()),
            Box::new(cache_requests.clone()),
            Box::new(cache_tokens_saved.clone()),
            Box::new(cache_store_errors.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(tokens.clone()),
            Box::new(retries.clone()),
            Box::new(fallbacks.clone()),
            Box::new(rate_limited.clone()),
            Box::new(limiter_store_errors.clone()),
            Box::new(limiter_fail_open.clone()),
            Box::new(quota_skips.clone()),
        ];
        let mut names = Vec::with_capacity(collectors.len());
        for collector in collectors {
            names.extend(collector.desc().iter().map(|desc| desc.fq_name.clone()));
            registry.register(collector)?;
        }
        Ok(Self {
            registry,
            names: Arc::new(names),
            async_jobs,
            rate_limited,
            limiter_store_errors,
            limiter_fail_open,
            quota_skips,
            tokens,
            retries,
            fallbacks,
            cache_requests,
            cache_tokens_saved,
            cache_store_errors,
            cache_entries,
            cache_bytes,
            auto_decisions,
            split_requests,
            split_latency,
            key_requests,
            cost_usd,
            cache_cost_saved_usd,
            budget_rejected,
            budget_alerts,
            budget_store_errors,
            auth_failures,
            streams,
            ledger_written,
            ledger_dropped,
            ledger_store_errors,
            ledger_journal_errors,
            ledger_lag,
            ledger_pending,
            requests,
            request_duration,
            time_to_first_token,
            upstream_duration,
            overhead,
            in_flight,
            connections,
            config_reloads,
            config_info,
            failovers,
            queue_wait,
            queue_depth,
            circuit_state,
            degradation_level,
            remaining_requests,
            remaining_tokens,
            batch_lines,
            batch_lines_in_flight,
            batch_line_limit,
            concurrency_limit,
            concurrency_changes,
        })
    }

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
