//! `[degradation]` and `[[static_responses]]`: when the ladder climbs, and
//! what a model answers at level 3.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// How long a model may have no usable deployment (nor fallback) before
/// each level; an unset threshold is a level never reached automatically.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradationConfig {
    /// Level 2: answered from the cache only.
    #[serde(with = "duration::serde_option")]
    pub cached_after: Option<Duration>,
    /// Level 3: a cache miss gets a matching `[[static_responses]]` answer.
    #[serde(with = "duration::serde_option")]
    pub static_after: Option<Duration>,
    /// Level 4: new requests get 503 `maintenance`. Off unless set.
    #[serde(with = "duration::serde_option")]
    pub maintenance_after: Option<Duration>,
    /// The `retry-after` given when no deployment says when it returns
    /// (an operator forced the level).
    #[serde(with = "duration::serde_duration")]
    pub retry_after: Duration,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        Self {
            cached_after: Some(Duration::from_secs(30)),
            static_after: Some(Duration::from_secs(120)),
            maintenance_after: None,
            retry_after: Duration::from_secs(30),
        }
    }
}

/// One templated answer for level 3. The first entry (in file order) whose
/// model and keywords match the call answers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    /// Model names (as requested, or the route it resolved to); empty = any.
    #[serde(default)]
    pub models: Vec<String>,
    /// Any of these in the last user message (case-insensitive); empty = any.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The assistant's text; `{model}` and `{retry_after}` (seconds) are filled in.
    pub content: String,
}
