//! A static answer in the Responses API's shape: one assistant message of
//! output text, usage zero, whole or as the stream's event grammar.

use serde_json::{Value, json};

/// The `response` object, `completed` (or `in_progress`, for the stream's
/// first events: no output yet).
fn object(id: &str, created: u64, model: &str, text: Option<&str>) -> Value {
    let (status, output) = match text {
        Some(text) => ("completed", json!([message(id, text, "completed")])),
        None => ("in_progress", json!([])),
    };
    json!({
        "id": format!("resp_static_{id}"), "object": "response", "created_at": created,
        "status": status, "model": model, "output": output, "error": null,
        "incomplete_details": null,
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}},
    })
}

fn message(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": format!("msg_static_{id}"), "status": status,
        "role": "assistant", "content": [part(text)],
    })
}

fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

pub fn whole(id: &str, created: u64, model: &str, text: &str) -> Value {
    object(id, created, model, Some(text))
}

/// The whole answer as the Responses stream: `response.created` to
/// `response.completed`, one text delta, numbered events, no `[DONE]`.
pub fn streamed(id: &str, created: u64, model: &str, text: &str) -> String {
    let item_id = format!("msg_static_{id}");
    let at = |extra: Value| {
        let mut event = json!({"output_index": 0, "item_id": item_id, "content_index": 0});
        if let (Some(event), Value::Object(extra)) = (event.as_object_mut(), extra) {
            event.extend(extra);
        }
        event
    };
    let events = [
        (
            "response.created",
            json!({"response": object(id, created, model, None)}),
        ),
        (
            "response.in_progress",
            json!({"response": object(id, created, model, None)}),
        ),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": message(id, "", "in_progress")}),
        ),
        ("response.content_part.added", at(json!({"part": part("")}))),
        ("response.output_text.delta", at(json!({"delta": text}))),
        ("response.output_text.done", at(json!({"text": text}))),
        (
            "response.content_part.done",
            at(json!({"part": part(text)})),
        ),
        (
            "response.output_item.done",
            json!({"output_index": 0, "item": message(id, text, "completed")}),
        ),
        (
            "response.completed",
            json!({"response": object(id, created, model, Some(text))}),
        ),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(sequence, (kind, mut data))| {
            data["type"] = json!(kind);
            data["sequence_number"] = json!(sequence);
            format!("event: {kind}\ndata: {data}\n\n")
        })
        .collect()
}
