//! `[circuit_breaker]`.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// Failure fraction over `window` (once `min_calls` were made) that opens it.
    pub failure_rate: f64,
    #[serde(with = "duration::serde_duration")]
    pub window: Duration,
    pub min_calls: u32,
    /// How long the circuit stays open before trial calls.
    #[serde(with = "duration::serde_duration")]
    pub recovery_timeout: Duration,
    pub half_open_max_calls: u32,
    /// Successful trials (or probes) that close it again.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 20,
            recovery_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
            success_threshold: 2,
        }
    }
}
