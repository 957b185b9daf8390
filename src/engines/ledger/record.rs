//! One row of the usage ledger: who called, what served it, what it used and
//! cost, how it went.

use std::sync::Arc;

use crate::vocab::Api;

use serde::Serialize;

/// Names are shared (`Arc<str>` clones of the gateway's own) or static, so
/// building a record per request allocates little.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRecord {
    /// Gateway-made, unique across replicas and restarts: the key that makes
    /// a write idempotent. Empty until the journal assigns it. Not the
    /// client's `x-request-id`, which a client may repeat.
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    pub request_id: String,
    /// The upstream's own request id (`x-upstream-request-id`), if it sent one.
    pub upstream_request_id: Option<String>,
    /// The call's OpenTelemetry trace id (hex), when it was traced.
    pub trace_id: Option<String>,
    /// The key's name when the call was made.
    pub key: Arc<str>,
    /// The key's stable id: a renamed key's history stays together under it.
    pub key_id: Arc<str>,
    pub org: Option<Arc<str>>,
    /// The model the client asked for (maybe virtual).
    pub model_requested: Arc<str>,
    /// The model that served it (after routing policies and fallbacks).
    pub model: Arc<str>,
    /// The deployment that served it, `cache` for a hit; stored as `-` if none.
    pub deployment: Option<Arc<str>>,
    pub priority: &'static str,
    /// `hit`, `semantic-hit`, `miss`, `bypass`, or `-` without a cache.
    pub cache: &'static str,
    /// The `x-sluice-tag` header: a free-form feature tag.
    pub tag: Option<String>,
    /// The API the client called (the Messages API's calls are chat
    /// completions here, by translation).
    pub api: Api,
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

/// A record's text columns as `&str`, which both stores' parameter traits
/// take (`Arc<str>` is not a PostgreSQL parameter type).
pub struct Texts<'a> {
    pub id: &'a str,
    pub request_id: &'a str,
    pub upstream_request_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub key: &'a str,
    pub key_id: &'a str,
    pub org: Option<&'a str>,
    pub model_requested: &'a str,
    pub model: &'a str,
    pub deployment: &'a str,
    pub priority: &'a str,
    pub cache: &'a str,
    pub tag: Option<&'a str>,
    pub api: &'a str,
}

impl UsageRecord {
    pub fn texts(&self) -> Texts<'_> {
        Texts {
            id: &self.id,
            request_id: &self.request_id,
            upstream_request_id: self.upstream_request_id.as_deref(),
            trace_id: self.trace_id.as_deref(),
            key: &self.key,
            key_id: &self.key_id,
            org: self.org.as_deref(),
            model_requested: &self.model_requested,
            model: &self.model,
            deployment: self.deployment.as_deref().unwrap_or("-"),
            priority: self.priority,
            cache: self.cache,
            tag: self.tag.as_deref(),
            api: self.api.as_str(),
        }
    }
}

pub const COLUMNS: &str = "record_id, at_ms, request_id, upstream_request_id, trace_id, key, key_id, org, model_requested, model, deployment, priority, cache, tag, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, status, estimated, api";

/// Values per row: `COLUMNS` and the day.
pub const VALUES_PER_ROW: usize = 23;

/// The `x-sluice-cache` values, as static strings.
pub fn cache_status(header: &[u8]) -> &'static str {
    match header {
        b"hit" => "hit",
        b"semantic-hit" => "semantic-hit",
        b"stale" => "stale",
        b"miss" => "miss",
        b"bypass" => "bypass",
        _ => "-",
    }
}

/// Columns a report may group by, and the SQL for each.
pub fn group_column(group_by: &str) -> Option<&'static str> {
    match group_by {
        "key" => Some("key"),
        // Rows written before key ids were recorded count under the name.
        "key_id" => Some("COALESCE(key_id, key)"),
        "org" => Some("COALESCE(org, '-')"),
        "model" => Some("model"),
        "deployment" => Some("deployment"),
        "tag" => Some("COALESCE(tag, '-')"),
        // Rows written before the column are OpenAI's, the only API then.
        "api" => Some("COALESCE(api, 'openai')"),
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
