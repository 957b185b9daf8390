//! `[retry]`: attempts, backoff and the retry budget.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Upstream attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff before retrying the same deployment: full jitter in
    /// `[0, min(max_delay, base_delay * 2^n)]`.
    #[serde(with = "duration::serde_duration")]
    pub base_delay: Duration,
    #[serde(with = "duration::serde_duration")]
    pub max_delay: Duration,
    /// Longer upstream hints are not waited out on the same deployment.
    #[serde(with = "duration::serde_duration")]
    pub max_retry_after: Duration,
    /// Retries may add at most this fraction to the request rate...
    pub budget_ratio: f64,
    /// ...plus this many retries per second.
    pub budget_min_per_sec: f64,
    /// How long a 429 without any hint takes a deployment out of rotation.
    #[serde(with = "duration::serde_duration")]
    pub default_throttle: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_min_per_sec: 10.0,
            default_throttle: Duration::from_secs(10),
        }
    }
}
