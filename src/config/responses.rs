//! `[responses]`: how long stored objects stay pinned, and where those that
//! name no model are made.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Stored objects (responses, conversations, stored chat completions,
/// vector stores...) live on the provider account that made them: which
/// deployment made each id is remembered this long, in memory (bounded) and
/// in Redis when set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    #[serde(with = "duration::serde_duration")]
    pub ttl: Duration,
    /// Ids kept in this replica's memory; the oldest go first.
    pub max_entries: u64,
    /// The model whose deployments make the objects a create names no model
    /// for (`POST /v1/conversations`, vector stores...) and answer lists;
    /// by default the first model of the config the caller's key may use.
    pub home_model: Option<String>,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            // OpenAI keeps stored responses for 30 days.
            ttl: Duration::from_secs(30 * 24 * 3600),
            max_entries: 100_000,
            home_model: None,
        }
    }
}
