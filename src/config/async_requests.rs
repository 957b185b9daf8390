//! `[async_requests]`: `Prefer: respond-async` calls, kept and run later.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsyncConfig {
    /// Whether `Prefer: respond-async` / `x-sluice-async: true` are honoured
    /// (they need a `[batch] store`).
    pub enabled: bool,
    /// Hosts an `x-sluice-callback` URL may name (exact host names, or
    /// `*.example.com`); empty refuses every callback.
    pub callback_hosts: Vec<String>,
    /// How long a job's result is kept after it was accepted.
    #[serde(with = "duration::serde_duration")]
    pub expire_after: Duration,
    /// Most asynchronous jobs this replica runs at once.
    pub max_concurrency: usize,
    /// Most jobs one key may have waiting or running; more get 429, so one
    /// key cannot fill the store or hold up every other key's jobs.
    pub max_queued_per_key: usize,
    /// Longest wait for a callback receiver to answer.
    #[serde(with = "duration::serde_duration")]
    pub callback_timeout: Duration,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            callback_hosts: Vec::new(),
            expire_after: Duration::from_secs(24 * 3600),
            max_concurrency: 16,
            max_queued_per_key: 1000,
            callback_timeout: Duration::from_secs(10),
        }
    }
}
