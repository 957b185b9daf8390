//! Chat completions and legacy completions, whole and streamed.

use std::ops::Range;

use bytes::Bytes;
use serde_json::{Value, json};

use super::answer::{Answer, Choice};

const FINGERPRINT: &str = "fp_sluice_mock";

fn finish_reason(choice: &Choice) -> &'static str {
    if choice.call.is_some() {
        "tool_calls"
    } else {
        "stop"
    }
}

/// Chat's `logprobs` for some of a choice's tokens; tool calls have none.
fn chat_logprobs(answer: &Answer, choice: &Choice, tokens: Range<usize>) -> Value {
    match answer.logprobs {
        None => Value::Null,
        Some(_) if choice.call.is_some() => json!({"content": null, "refusal": null}),
        Some(top) => json!({"content": choice.text.logprobs(tokens, top), "refusal": null}),
    }
}

pub fn chat(answer: &Answer) -> Value {
    let choices: Vec<Value> = answer
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let mut message = json!({"role": "assistant", "refusal": null, "annotations": []});
            match &choice.call {
                Some(call) => {
                    message["content"] = Value::Null;
                    message["tool_calls"] = json!([{"id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": choice.text.text}}]);
                }
                None => message["content"] = json!(choice.text.text),
            }
            json!({"index": index, "message": message, "finish_reason": finish_reason(choice),
                   "logprobs": chat_logprobs(answer, choice, 0..choice.text.tokens.len())})
        })
        .collect();
    json!({
        "id": format!("chatcmpl-{}", answer.id), "object": "chat.completion",
        "created": answer.created, "model": answer.model, "choices": choices,
        "usage": answer.chat_usage(), "system_fingerprint": FINGERPRINT, "service_tier": "default"
    })
}

/// Chunks as the API sends them: per choice a role delta (with the call's
/// id and name for a tool call), then content or argument fragments, then
/// an empty delta with the finish reason; choices interleave.
pub fn chat_events(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    let chunk = |index: usize, delta: Value, logprobs: Value, finish: Value| {
        let mut value = json!({
            "id": format!("chatcmpl-{}", answer.id), "object": "chat.completion.chunk",
            "created": answer.created, "model": answer.model, "system_fingerprint": FINGERPRINT,
            "service_tier": "default",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
        });
        if include_usage {
            value["usage"] = Value::Null;
        }
        data_event(&value)
    };
    let mut events: Vec<Bytes> = answer
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let delta = match &choice.call {
                Some(call) => json!({"role": "assistant", "content": null, "refusal": null,
                    "tool_calls": [{"index": 0, "id": call.id, "type": "function",
                                    "function": {"name": call.name, "arguments": ""}}]}),
                None => json!({"role": "assistant", "content": "", "refusal": null}),
            };
            chunk(index, delta, Value::Null, Value::Null)
        })
        .collect();
    let pieces: Vec<_> = answer
        .choices
        .iter()
        .map(|c| c.text.pieces(answer.pieces))
        .collect();
    let longest = pieces.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..longest {
        for (index, choice) in answer.choices.iter().enumerate() {
            let Some((piece, tokens)) = pieces[index].get(step) else {
                continue;
            };
            let delta = match choice.call {
                Some(_) => json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                None => json!({"content": piece}),
            };
            let logprobs = chat_logprobs(answer, choice, tokens.clone());
            events.push(chunk(index, delta, logprobs, Value::Null));
        }
    }
    for (index, choice) in answer.choices.iter().enumerate() {
        events.push(chunk(
            index,
            json!({}),
            Value::Null,
            json!(finish_reason(choice)),
        ));
    }
    if include_usage {
        events.push(data_event(&json!({
            "id": format!("chatcmpl-{}", answer.id), "object": "chat.completion.chunk",
            "created": answer.created, "model": answer.model, "system_fingerprint": FINGERPRINT,
            "service_tier": "default", "choices": [], "usage": answer.chat_usage()
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn legacy_logprobs(answer: &Answer, choice: &Choice, tokens: Range<usize>) -> Value {
    answer
        .logprobs
        .map_or(Value::Null, |top| choice.text.legacy_logprobs(tokens, top))
}

pub fn completion(answer: &Answer) -> Value {
    let choices: Vec<Value> = answer
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let logprobs = legacy_logprobs(answer, choice, 0..choice.text.tokens.len());
            json!({"index": index, "text": choice.text.text, "logprobs": logprobs, "finish_reason": "stop"})
        })
        .collect();
    json!({
        "id": format!("cmpl-{}", answer.id), "object": "text_completion",
        "created": answer.created, "model": answer.model, "choices": choices,
        "usage": answer.chat_usage(), "system_fingerprint": FINGERPRINT
    })
}

pub fn completion_events(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    let chunk = |index: usize, text: &str, logprobs: Value, finish: Value| {
        data_event(&json!({
            "id": format!("cmpl-{}", answer.id), "object": "text_completion",
            "created": answer.created, "model": answer.model, "system_fingerprint": FINGERPRINT,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]
        }))
    };
    let mut events = Vec::new();
    for (index, choice) in answer.choices.iter().enumerate() {
        for (piece, tokens) in choice.text.pieces(answer.pieces) {
            let logprobs = legacy_logprobs(answer, choice, tokens);
            events.push(chunk(index, piece, logprobs, Value::Null));
        }
        events.push(chunk(index, "", Value::Null, json!("stop")));
    }
    if include_usage {
        events.push(data_event(&json!({
            "id": format!("cmpl-{}", answer.id), "object": "text_completion",
            "created": answer.created, "model": answer.model, "system_fingerprint": FINGERPRINT,
            "choices": [], "usage": answer.chat_usage()
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn data_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The chat completion object an answer carries: the object itself, or one
/// assembled from a stream's chunks (the first choice's content).
pub fn assembled(answer: &[u8]) -> Option<Value> {
    if let Ok(object) = serde_json::from_slice::<Value>(answer) {
        return (object["object"] == "chat.completion").then_some(object);
    }
    let chunks: Vec<Value> = std::str::from_utf8(answer)
        .ok()?
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter(|chunk| chunk["object"] == "chat.completion.chunk")
        .collect();
    let first = chunks.first()?;
    let content: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    Some(json!({
        "id": first["id"], "object": "chat.completion", "created": first["created"],
        "model": first["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": chunks.iter().rev().find_map(|chunk| chunk.get("usage").filter(|u| !u.is_null())),
    }))
}
