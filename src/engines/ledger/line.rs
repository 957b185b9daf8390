//! A record as one line of the journal: JSON, so a line cut short by a
//! crash fails to parse instead of being misread, and an operator can read
//! the file.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::record::{UsageRecord, cache_status};
use crate::config::Priority;
use crate::vocab::Api;

#[derive(Serialize, Deserialize)]
struct Line<S> {
    id: S,
    at_ms: i64,
    request_id: S,
    upstream_request_id: Option<S>,
    /// Absent in lines written before traces were recorded.
    #[serde(default)]
    trace_id: Option<S>,
    key: S,
    /// Absent in lines written before key ids were recorded.
    #[serde(default)]
    key_id: Option<S>,
    org: Option<S>,
    model_requested: S,
    model: S,
    deployment: Option<S>,
    priority: S,
    cache: S,
    tag: Option<S>,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    cost_usd: f64,
    latency_ms: i64,
    status: i64,
    estimated: bool,
    /// Absent in lines written before the API was recorded.
    #[serde(default)]
    api: Option<S>,
}

/// Appends the record and a newline to `out`.
pub fn encode(record: &UsageRecord, out: &mut Vec<u8>) {
    let line = Line {
        id: &*record.id,
        at_ms: record.at_ms,
        request_id: &*record.request_id,
        upstream_request_id: record.upstream_request_id.as_deref(),
        trace_id: record.trace_id.as_deref(),
        key: &*record.key,
        key_id: Some(&*record.key_id),
        org: record.org.as_deref(),
        model_requested: &*record.model_requested,
        model: &*record.model,
        deployment: record.deployment.as_deref(),
        priority: record.priority,
        cache: record.cache,
        tag: record.tag.as_deref(),
        prompt_tokens: record.prompt_tokens,
        completion_tokens: record.completion_tokens,
        cached_tokens: record.cached_tokens,
        cost_usd: record.cost_usd,
        latency_ms: record.latency_ms,
        status: record.status,
        estimated: record.estimated,
        api: Some(record.api.as_str()),
    };
    let start = out.len();
    // Writing plain values into a Vec fails only on a non-finite cost,
    // which JSON cannot carry: that record is stored with cost 0.
    if serde_json::to_writer(&mut *out, &line).is_err() {
        out.truncate(start);
        let line = Line {
            cost_usd: 0.0,
            ..line
        };
        let _ = serde_json::to_writer(&mut *out, &line);
    }
    out.push(b'\n');
}

/// The record of one line (without its newline); `None` for a line that is
/// torn or not a record.
pub fn decode(line: &[u8]) -> Option<UsageRecord> {
    let line: Line<String> = serde_json::from_slice(line).ok()?;
    if line.id.is_empty() {
        return None;
    }
    let shared = |text: String| -> Arc<str> { text.into() };
    Some(UsageRecord {
        id: line.id,
        at_ms: line.at_ms,
        request_id: line.request_id,
        upstream_request_id: line.upstream_request_id,
        trace_id: line.trace_id,
        key_id: shared(line.key_id.unwrap_or_else(|| line.key.clone())),
        key: shared(line.key),
        org: line.org.map(shared),
        model_requested: shared(line.model_requested),
        model: shared(line.model),
        deployment: line.deployment.map(shared),
        priority: Priority::parse(&line.priority)
            .unwrap_or(Priority::Standard)
            .as_str(),
        cache: cache_status(line.cache.as_bytes()),
        tag: line.tag,
        api: Api::parse(line.api.as_deref().unwrap_or_default()),
        prompt_tokens: line.prompt_tokens,
        completion_tokens: line.completion_tokens,
        cached_tokens: line.cached_tokens,
        cost_usd: line.cost_usd,
        latency_ms: line.latency_ms,
        status: line.status,
        estimated: line.estimated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_torn_line_is_refused() {
        let record = UsageRecord {
            id: "abc-1".into(),
            at_ms: 1_700_000_000_000,
            request_id: "req \"quoted\"\n".into(),
            upstream_request_id: Some("up-1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            key: "k".into(),
            key_id: "key_1".into(),
            org: Some("eng".into()),
            model_requested: "virtual".into(),
            model: "gpt-4o".into(),
            deployment: Some("oa".into()),
            priority: "batch",
            cache: "miss",
            tag: Some("ü tag".into()),
            api: Api::Anthropic,
            prompt_tokens: 9,
            completion_tokens: 3,
            cached_tokens: 1,
            cost_usd: 0.25,
            latency_ms: 12,
            status: 200,
            estimated: true,
        };
        let mut out = Vec::new();
        encode(&record, &mut out);
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(decode(&out[..out.len() - 1]), Some(record));
        for cut in [1, out.len() / 2, out.len() - 2] {
            assert_eq!(decode(&out[..cut]), None, "cut at {cut}");
        }
    }
}
