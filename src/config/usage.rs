//! `[usage]`: the usage ledger.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// `"sqlite"` (a file in `data_dir`), a `postgres://` URL, or `"none"`.
    pub store: String,
    pub data_dir: String,
    /// Records per write.
    pub batch_size: usize,
    /// Longest a record waits before it is written.
    #[serde(with = "duration::serde_duration")]
    pub flush_interval: Duration,
    /// How often new records are appended to the local journal: a record
    /// answered this long before a crash is replayed at the next start.
    #[serde(with = "duration::serde_duration")]
    pub journal_interval: Duration,
    /// Records held (journaled, not yet in the store) while the store is slow or down; more are dropped (and counted).
    pub buffer: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            store: "sqlite".to_owned(),
            data_dir: "data".to_owned(),
            batch_size: 500,
            flush_interval: Duration::from_secs(1),
            journal_interval: Duration::from_millis(2),
            buffer: 100_000,
        }
    }
}
