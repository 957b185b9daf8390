//! `[responses]`: how long stored responses stay pinned.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Stored responses (`previous_response_id`, `GET /v1/responses/{id}`...)
/// live on the provider account that made them: which deployment made each
/// id is remembered this long, in memory (bounded) and in Redis when set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    #[serde(with = "duration::serde_duration")]
    pub ttl: Duration,
    /// Ids kept in this replica's memory; the oldest go first.
    pub max_entries: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            // OpenAI keeps stored responses for 30 days.
            ttl: Duration::from_secs(30 * 24 * 3600),
            max_entries: 100_000,
        }
    }
}
