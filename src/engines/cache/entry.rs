//! A cached answer, as recorded, and how it is replayed in the shape the
//! client asked for. Chat completions convert both ways (a streamed miss can
//! answer a non-streamed hit and the reverse); other endpoints replay only in
//! the shape they were recorded in.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::engines::metering::unix_ms;
use crate::infra::sse::usage::{Hidden, hide_in_event};
use crate::infra::sse::{Event, Piece, Splitter, json};
use crate::vocab::Endpoint;
use crate::vocab::Usage;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recorded {
    /// A whole JSON body.
    Json { body: String },
    /// SSE events, each with its `\n\n`, `[DONE]` included.
    Sse { events: Vec<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Unix milliseconds, for the `age` header.
    pub created_ms: u64,
    pub ttl_ms: u64,
    /// How long past its TTL the entry is kept, for degraded calls only
    /// (`[cache] stale_for` when it was stored).
    #[serde(default)]
    pub stale_ms: u64,
    pub recorded: Recorded,
    /// Upstream usage, for "tokens saved".
    #[serde(default)]
    pub total_tokens: u64,
    /// Prompt, completion and cached prompt tokens, for "cost saved".
    #[serde(default)]
    pub usage: Option<(u64, u64, u64)>,
}

impl Entry {
    pub fn new(
        recorded: Recorded,
        ttl: Duration,
        stale_for: Duration,
        usage: Option<Usage>,
    ) -> Self {
        Self {
            created_ms: unix_ms() as u64,
            ttl_ms: ttl.as_millis() as u64,
            stale_ms: stale_for.as_millis() as u64,
            recorded,
            total_tokens: usage.map_or(0, |u| u.total()),
            usage: usage.map(|u| (u.prompt_tokens, u.completion_tokens, u.cached_tokens)),
        }
    }

    pub fn weight(&self) -> u32 {
        let bytes = match &self.recorded {
            Recorded::Json { body } => body.len(),
            Recorded::Sse { events } => events.iter().map(String::len).sum(),
        };
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    pub fn age_secs(&self) -> u64 {
        self.age_ms() / 1000
    }

    fn age_ms(&self) -> u64 {
        (unix_ms() as u64).saturating_sub(self.created_ms)
    }

    /// Within its TTL: any call may be answered with it. Past it (but
    /// still stored, within `stale_for`) only a degraded call may.
    pub fn fresh(&self) -> bool {
        self.age_ms() < self.ttl_ms
    }

    /// How long the store keeps it: its TTL, then `stale_for`.
    pub fn kept(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.saturating_add(self.stale_ms))
    }
}

/// The answer in the asked-for shape, or `None` when it cannot be rebuilt.
pub enum Replay {
    Json(Bytes),
    Sse(Vec<Bytes>),
}

pub fn replay(
    entry: &Entry,
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool,
) -> Option<Replay> {
    match (&entry.recorded, stream) {
        (Recorded::Json { body }, false) => Some(Replay::Json(Bytes::from(body.clone()))),
        (Recorded::Sse { events }, true) => Some(Replay::Sse(
            events
                .iter()
                .filter_map(|event| replay_event(event, include_usage))
                .collect(),
        )),
        (Recorded::Json { body }, true) if endpoint == Endpoint::ChatCompletions => {
            chat_json_to_sse(body, include_usage).map(Replay::Sse)
        }
        (Recorded::Sse { events }, false) if endpoint == Endpoint::ChatCompletions => {
            chat_sse_to_json(events).map(|body| Replay::Json(Bytes::from(body)))
        }
        _ => None,
    }
}

/// One recorded event. It was recorded as the upstream sent it, with
/// `include_usage` on, so a client that did not ask gets it without usage.
fn replay_event(event: &str, include_usage: bool) -> Option<Bytes> {
    if include_usage {
        return Some(Bytes::from(event.to_owned()));
    }
    match hide_in_event(event.as_bytes()) {
        Hidden::Keep => Some(Bytes::from(event.to_owned())),
        Hidden::Drop => None,
        Hidden::Rewrite(cleaned) => Some(Bytes::from(cleaned)),
    }
}

/// A chunk with no choices that carries usage: shown only to clients that asked.
fn data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn chat_json_to_sse(body: &str, include_usage: bool) -> Option<Vec<Bytes>> {
    let reply: Value = serde_json::from_str(body).ok()?;
    let choices = reply["choices"].as_array()?;
    let base = |choices: Value| {
        let mut chunk = json!({
            "id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"],
            "model": reply["model"], "system_fingerprint": reply["system_fingerprint"], "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    };
    let mut events = Vec::new();
    for choice in choices {
        let index = &choice["index"];
        let message = &choice["message"];
        let mut delta = Map::new();
        delta.insert(
            "role".into(),
            message
                .get("role")
                .cloned()
                .unwrap_or_else(|| json!("assistant")),
        );
        for field in ["content", "refusal", "tool_calls"] {
            if let Some(value) = message.get(field).filter(|v| !v.is_null()) {
                delta.insert(field.into(), with_tool_indexes(field, value));
            }
        }
        events.push(data(&base(
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]),
        )));
        events.push(data(&base(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": choice["finish_reason"]}]))));
    }
    if include_usage && !reply["usage"].is_null() {
        let mut chunk = base(json!([]));
        chunk["usage"] = reply["usage"].clone();
        events.push(data(&chunk));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Some(events)
}

/// Streamed tool-call deltas carry an `index`; whole messages do not.
fn with_tool_indexes(field: &str, value: &Value) -> Value {
    match (field, value) {
        ("tool_calls", Value::Array(calls)) => Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(index, call)| {
                    let mut call = call.clone();
                    // Not `call["index"] = ..`: that panics on a non-object call.
                    if let Some(fields) = call.as_object_mut() {
                        fields.insert("index".into(), json!(index));
                    }
                    call
                })
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// OpenAI's largest `n`. A chunk's choice `index` sizes the rebuilt list, so
/// a larger one (a corrupt or hostile recording) is refused, not allocated.
const MAX_CHOICES: usize = 128;

/// Folds chat chunks back into one `chat.completion`. Tool-call deltas are
/// not merged: such entries replay only as streams.
fn chat_sse_to_json(events: &[String]) -> Option<String> {
    let mut head: Option<Value> = None;
    let mut usage = Value::Null;
    let mut choices: Vec<(String, Value, Value)> = Vec::new();
    for event in events {
        let event = Event::parse(event.as_bytes());
        if event.is_done() {
            break;
        }
        let chunk: Value = serde_json::from_slice(&event.data).ok()?;
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        for choice in chunk["choices"].as_array()? {
            let index = choice["index"]
                .as_u64()
                .and_then(|index| usize::try_from(index).ok())
                .filter(|index| *index < MAX_CHOICES)?;
            if choices.len() <= index {
                choices.resize(index + 1, (String::new(), json!("assistant"), Value::Null));
            }
            let delta = &choice["delta"];
            if delta.get("tool_calls").is_some() || delta.get("function_call").is_some() {
                return None;
            }
            if let Some(text) = delta["content"].as_str() {
                choices[index].0.push_str(text);
            }
            if let Some(role) = delta.get("role") {
                choices[index].1 = role.clone();
            }
            if !choice["finish_reason"].is_null() {
                choices[index].2 = choice["finish_reason"].clone();
            }
        }
        head.get_or_insert(chunk);
    }
    let head = head?;
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, (content, role, finish))| {
            json!({"index": index, "message": {"role": role, "content": content, "refusal": null},
                   "logprobs": null, "finish_reason": finish})
        })
        .collect();
    let reply = json!({
        "id": head["id"], "object": "chat.completion", "created": head["created"], "model": head["model"],
        "system_fingerprint": head["system_fingerprint"], "choices": choices, "usage": usage,
    });
    Some(reply.to_string())
}

/// Splits a recorded stream into its events if it ended properly: `[DONE]`
/// for chat and completions, `response.completed` for responses, and no
/// error event. Events are read by the grammar, so every spelling of a
/// stream is recorded; events of only comments (keep-alives) are not kept.
/// A last event without its blank line counts, as it did when it was relayed.
pub fn complete_events(recording: &[u8], endpoint: Endpoint) -> Option<Vec<String>> {
    // One feed of the whole recording, so no event is oversized.
    let mut splitter = Splitter::new(recording.len());
    let mut events = Vec::new();
    splitter.feed(recording, |piece| {
        if let Piece::Event(raw) = piece {
            events.push(raw.to_vec());
        }
    });
    events.extend(splitter.finish());
    let mut finished = false;
    let mut kept = Vec::with_capacity(events.len());
    for raw in events {
        let event = Event::parse(&raw);
        if !event.has_data && event.name.is_empty() {
            continue;
        }
        if is_error(&event) {
            return None;
        }
        finished = match endpoint {
            Endpoint::Responses => finished || event_type(&event) == b"response.completed",
            _ => event.is_done(),
        };
        kept.push(String::from_utf8(raw).ok()?);
    }
    finished.then_some(kept)
}

/// The event's type: its `event:` field, else its data's top-level `type`.
fn event_type<'a>(event: &'a Event<'_>) -> &'a [u8] {
    if !event.name.is_empty() {
        return event.name;
    }
    json::member(&event.data, b"type")
        .and_then(|member| event.data.get(member.value))
        .and_then(|value| value.strip_prefix(b"\"")?.strip_suffix(b"\""))
        .unwrap_or_default()
}

/// An error event: `event: error` or `"type": "error"` (Responses), or a
/// top-level `error` member (chat and completions, and Sluice's own).
fn is_error(event: &Event<'_>) -> bool {
    event_type(event) == b"error"
        || json::member(&event.data, b"error")
            .is_some_and(|error| event.data.get(error.value) != Some(b"null".as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    fn entry(recorded: Recorded) -> Entry {
        Entry::new(recorded, Duration::from_secs(60), Duration::ZERO, None)
    }

    #[test]
    fn json_becomes_a_stream_and_back() {
        let Some(Replay::Sse(events)) = replay(
            &entry(Recorded::Json { body: JSON.into() }),
            Endpoint::ChatCompletions,
            true,
            true,
        ) else {
            panic!("no stream");
        };
        let text: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect();
        assert!(text[0].contains(r#""role":"assistant""#) && text[0].contains("Hello there"));
        assert!(text[1].contains(r#""finish_reason":"stop""#));
        assert!(text[2].contains(r#""choices":[]"#) && text[2].contains(r#""total_tokens":5"#));
        assert_eq!(text.last().unwrap(), "data: [DONE]\n\n");

        let Some(Replay::Json(body)) = replay(
            &entry(Recorded::Sse { events: text }),
            Endpoint::ChatCompletions,
            false,
            false,
        ) else {
            panic!("no json");
        };
        let rebuilt: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(rebuilt["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(rebuilt["choices"][0]["finish_reason"], "stop");
        assert_eq!(rebuilt["usage"]["total_tokens"], 5);
        assert_eq!(rebuilt["object"], "chat.completion");
    }

    #[test]
    fn usage_chunks_only_for_clients_that_asked() {
        let Some(Replay::Sse(events)) = replay(
            &entry(Recorded::Json { body: JSON.into() }),
            Endpoint::ChatCompletions,
            true,
            false,
        ) else {
            panic!("no stream");
        };
        assert!(
            !events
                .iter()
                .any(|e| e.windows(7).any(|w| w == b"\"usage\""))
        );
        let recorded = Recorded::Sse {
            events: vec![
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n".into(),
                "data: {\"choices\":[],\"usage\":{\"total_tokens\":5}}\n\n".into(),
                "data: [DONE]\n\n".into(),
            ],
        };
        let Some(Replay::Sse(events)) =
            replay(&entry(recorded), Endpoint::ChatCompletions, true, false)
        else {
            panic!("no stream");
        };
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn odd_recordings_do_not_replay_rather_than_panic() {
        let huge_index = Recorded::Sse {
            events: vec![
                "data: {\"choices\":[{\"index\":18446744073709551615,\"delta\":{}}]}\n\n".into(),
            ],
        };
        assert!(replay(&entry(huge_index), Endpoint::ChatCompletions, false, false).is_none());
        let scalar_tool_call = Recorded::Json {
            body: r#"{"choices":[{"index":0,"message":{"tool_calls":[1,{"id":"t"}]}}]}"#.into(),
        };
        let Some(Replay::Sse(events)) = replay(
            &entry(scalar_tool_call),
            Endpoint::ChatCompletions,
            true,
            false,
        ) else {
            panic!("no stream");
        };
        assert!(String::from_utf8_lossy(&events[0]).contains(r#"[1,{"id":"t","index":1}]"#));
    }

    #[test]
    fn other_endpoints_replay_only_as_recorded() {
        let recorded = entry(Recorded::Json { body: "{}".into() });
        assert!(replay(&recorded, Endpoint::Responses, true, false).is_none());
        assert!(replay(&recorded, Endpoint::Responses, false, false).is_some());
    }
}
