//! One row of the usage ledger: who called, what served it, what it used and
//! cost, how it went.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UsageRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    pub request_id: String,
    pub key: String,
    pub org: Option<String>,
    /// The model the client asked for (maybe virtual).
    pub model_requested: String,
    /// The model that served it (after routing policies and fallbacks).
    pub model: String,
    /// The deployment that served it, `cache` for a hit, `-` if none.
    pub deployment: String,
    pub priority: String,
    /// `hit`, `semantic-hit`, `miss`, `bypass`, or `-` without a cache.
    pub cache: String,
    /// The `x-sluice-tag` header: a free-form feature tag.
    pub tag: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
    /// To the end of the response (a stream's last chunk).
    pub latency_ms: i64,
    pub status: i64,
    /// Tokens counted by Sluice because the upstream reported none.
    pub estimated: bool,
}

pub const COLUMNS: &str = "at_ms, request_id, key, org, model_requested, model, deployment, priority, cache, tag, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, status, estimated";

/// Columns a report may group by, and the SQL for each.
pub fn group_column(group_by: &str) -> Option<&'static str> {
    match group_by {
        "key" => Some("key"),
        "org" => Some("COALESCE(org, '-')"),
        "model" => Some("model"),
        "deployment" => Some("deployment"),
        "tag" => Some("COALESCE(tag, '-')"),
        "day" => Some("day"),
        _ => None,
    }
}

/// One line of a usage report.
#[derive(Debug, Clone, Serialize)]
pub struct Total {
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
}
