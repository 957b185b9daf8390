//! Prometheus metrics behind one typed handle. Labels stay low-cardinality:
//! scopes and kinds, never key names.

use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests refused by a rate limit, by scope (key, org, model, deployment) and kind.
    pub rate_limited: IntCounterVec,
    /// Rate-limit store (Redis) failures.
    pub limiter_store_errors: IntCounter,
    /// Requests admitted without a limit check because the store failed (fail_open).
    pub limiter_fail_open: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
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
        let limiter_fail_open = IntCounter::new(
            "sluice_limiter_fail_open_total",
            "Requests admitted unchecked because the rate-limit store failed",
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(limiter_store_errors.clone()))?;
        registry.register(Box::new(limiter_fail_open.clone()))?;
        Ok(Self {
            registry,
            rate_limited,
            limiter_store_errors,
            limiter_fail_open,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}
