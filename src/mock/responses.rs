//! The Responses API: a `Response` object with every field the spec
//! requires (request settings echoed as the API echoes them), and its
//! event stream: an output item that is a message or a function call.

use bytes::Bytes;
use serde_json::{Value, json};

use super::answer::{Answer, Choice};

/// The response object; `done` adds the output and usage. Unfinished, it
/// has no `usage` at all: the API sends `null` there, which the spec's
/// `Response` does not allow, and leaving it out satisfies both.
pub fn response_object(answer: &Answer, request: &Value, done: bool) -> Value {
    let setting = |key: &str, default: Value| match request.get(key) {
        None | Some(Value::Null) => default,
        Some(value) => value.clone(),
    };
    let output: Vec<Value> = if done {
        answer
            .choices
            .iter()
            .map(|c| item(answer, c, true))
            .collect()
    } else {
        Vec::new()
    };
    let mut response = json!({
        "id": format!("resp_{}", answer.id), "object": "response",
        "created_at": answer.created,
        "status": if done { "completed" } else { "in_progress" },
        "completed_at": if done { json!(answer.created) } else { Value::Null },
        "error": null, "incomplete_details": null,
        "instructions": setting("instructions", Value::Null),
        "max_output_tokens": setting("max_output_tokens", Value::Null),
        "model": answer.model, "output": output,
        "parallel_tool_calls": setting("parallel_tool_calls", json!(true)),
        "previous_response_id": setting("previous_response_id", Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "store": setting("store", json!(true)),
        "temperature": setting("temperature", json!(1.0)),
        "top_p": setting("top_p", json!(1.0)),
        "text": {"format": setting("text", json!({}))
            .get("format").cloned().unwrap_or(json!({"type": "text"}))},
        "tool_choice": setting("tool_choice", json!("auto")),
        "tools": setting("tools", json!([])),
        "truncation": setting("truncation", json!("disabled")),
        "metadata": setting("metadata", json!({})),
        "service_tier": "default",
    });
    if done {
        response["usage"] = answer.responses_usage();
    }
    response
}

fn item_id(answer: &Answer, choice: &Choice) -> String {
    match choice.call {
        Some(_) => format!("fc_{}", answer.id),
        None => format!("msg_{}", answer.id),
    }
}

fn logprobs(answer: &Answer, choice: &Choice, tokens: std::ops::Range<usize>) -> Vec<Value> {
    answer
        .logprobs
        .map_or_else(Vec::new, |top| choice.text.logprobs(tokens, top))
}

fn text_part(answer: &Answer, choice: &Choice, done: bool) -> Value {
    let (text, logprobs) = if done {
        let all = 0..choice.text.tokens.len();
        (choice.text.text.as_str(), logprobs(answer, choice, all))
    } else {
        ("", Vec::new())
    };
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs})
}

/// A choice as an output item: a message, or a function call.
fn item(answer: &Answer, choice: &Choice, done: bool) -> Value {
    let status = if done { "completed" } else { "in_progress" };
    let id = item_id(answer, choice);
    match &choice.call {
        Some(call) => json!({
            "type": "function_call", "id": id, "call_id": call.id, "name": call.name,
            "arguments": if done { choice.text.text.as_str() } else { "" }, "status": status
        }),
        None => json!({
            "type": "message", "id": id, "status": status, "role": "assistant",
            "content": if done { json!([text_part(answer, choice, true)]) } else { json!([]) }
        }),
    }
}

pub fn responses_events(answer: &Answer, request: &Value) -> Vec<Bytes> {
    let mut bodies = vec![
        json!({"type": "response.created", "response": response_object(answer, request, false)}),
        json!({"type": "response.in_progress", "response": response_object(answer, request, false)}),
    ];
    for (index, choice) in answer.choices.iter().enumerate() {
        bodies.push(
            json!({"type": "response.output_item.added", "output_index": index,
                           "item": item(answer, choice, false)}),
        );
        bodies.extend(match choice.call {
            Some(_) => call_events(answer, choice, index),
            None => text_events(answer, choice, index),
        });
        bodies.push(
            json!({"type": "response.output_item.done", "output_index": index,
                           "item": item(answer, choice, true)}),
        );
    }
    bodies.push(
        json!({"type": "response.completed", "response": response_object(answer, request, true)}),
    );
    bodies
        .into_iter()
        .enumerate()
        .map(|(sequence, mut body)| {
            body["sequence_number"] = json!(sequence);
            Bytes::from(format!(
                "event: {}\ndata: {body}\n\n",
                body["type"].as_str().unwrap_or("")
            ))
        })
        .collect()
}

fn text_events(answer: &Answer, choice: &Choice, index: usize) -> Vec<Value> {
    let id = item_id(answer, choice);
    let mut bodies = vec![json!({
        "type": "response.content_part.added", "item_id": id, "output_index": index,
        "content_index": 0, "part": text_part(answer, choice, false)
    })];
    for (piece, tokens) in choice.text.pieces(answer.pieces) {
        bodies.push(json!({
            "type": "response.output_text.delta", "item_id": id, "output_index": index,
            "content_index": 0, "delta": piece, "logprobs": logprobs(answer, choice, tokens)
        }));
    }
    let done = text_part(answer, choice, true);
    bodies.push(json!({
        "type": "response.output_text.done", "item_id": id, "output_index": index,
        "content_index": 0, "text": choice.text.text, "logprobs": done["logprobs"]
    }));
    bodies.push(json!({
        "type": "response.content_part.done", "item_id": id, "output_index": index,
        "content_index": 0, "part": done
    }));
    bodies
}

fn call_events(answer: &Answer, choice: &Choice, index: usize) -> Vec<Value> {
    let id = item_id(answer, choice);
    let mut bodies: Vec<Value> = choice
        .text
        .pieces(answer.pieces)
        .into_iter()
        .map(|(piece, _)| {
            json!({"type": "response.function_call_arguments.delta", "item_id": id,
                   "output_index": index, "delta": piece})
        })
        .collect();
    let name = choice.call.as_ref().map_or("", |call| call.name.as_str());
    bodies.push(json!({
        "type": "response.function_call_arguments.done", "item_id": id, "output_index": index,
        "name": name, "arguments": choice.text.text
    }));
    bodies
}

/// `POST /responses/compact`: the input's messages kept, and one opaque
/// compaction item standing for what came before.
pub fn compaction(request: &Value, input_tokens: u64) -> Value {
    let id = super::answer::random_id();
    let message = |index: usize, content: Value| {
        json!({"type": "message", "id": format!("msg_{id}_{index}"), "status": "completed",
               "role": "user", "content": content})
    };
    let mut output: Vec<Value> = match request.get("input") {
        Some(Value::String(text)) => {
            vec![message(0, json!([{"type": "input_text", "text": text}]))]
        }
        Some(Value::Array(items)) => items
            .iter()
            .filter(|item| item.get("role").is_some_and(|role| role == "user"))
            .enumerate()
            .map(|(index, item)| {
                let content = match item.get("content") {
                    Some(Value::String(text)) => json!([{"type": "input_text", "text": text}]),
                    Some(content) => content.clone(),
                    None => json!([]),
                };
                message(index, content)
            })
            .collect(),
        _ => Vec::new(),
    };
    let output_tokens = 16;
    output.push(json!({
        "type": "compaction", "id": format!("cmp_{id}"),
        "encrypted_content": format!("mock-compaction-{id}"),
    }));
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    json!({
        "id": format!("resp_{id}"), "object": "response.compaction",
        "output": output, "created_at": created_at,
        "usage": {
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    })
}
