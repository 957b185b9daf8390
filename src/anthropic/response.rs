//! A chat completion written as a Messages response.

use serde_json::{Value, json};

/// Anthropic's `stop_reason` for a chat completion's `finish_reason`. A
/// chat completion does not say whether a stop sequence ended it, so
/// `stop` is `end_turn`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// The message id for a completion's id: `msg_` and its own suffix.
pub fn message_id(completion_id: Option<&str>) -> String {
    let id = completion_id.unwrap_or_default();
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// Anthropic's `usage` from a chat completion's: cached prompt tokens are
/// `cache_read_input_tokens` and not part of `input_tokens`.
pub fn usage(usage: Option<&Value>) -> Value {
    let count = |path: &[&str]| {
        path.iter()
            .try_fold(usage.unwrap_or(&Value::Null), |value, key| value.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let cached = count(&["prompt_tokens_details", "cached_tokens"]);
    json!({
        "input_tokens": count(&["prompt_tokens"]).saturating_sub(cached),
        "output_tokens": count(&["completion_tokens"]),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// The Messages response for a chat completion `body`; `None` when it is
/// not one.
pub fn to_message(body: &[u8]) -> Option<Value> {
    let completion: Value = serde_json::from_slice(body).ok()?;
    let choice = completion.get("choices")?.get(0)?;
    let message = choice.get("message")?;
    let mut content = Vec::new();
    let text = message.get("content").and_then(Value::as_str);
    let refusal = message.get("refusal").and_then(Value::as_str);
    if let Some(text) = text.or(refusal).filter(|text| !text.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function")?;
        let arguments = function.get("arguments").and_then(Value::as_str)?;
        // Arguments cut short (a `length` finish) are not JSON: the call
        // is still shown, with no input, rather than the whole answer lost.
        let input: Value = serde_json::from_str(arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        content.push(json!({
            "type": "tool_use", "id": call.get("id")?, "name": function.get("name")?,
            "input": input,
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let called = content.iter().any(|block| block["type"] == "tool_use");
    // Some upstreams say `stop` after tool calls: the client must run them.
    let stop = match stop_reason(finish.unwrap_or("stop")) {
        "end_turn" if called => "tool_use",
        stop => stop,
    };
    Some(json!({
        "id": message_id(completion.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage(completion.get("usage")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tool_calls_become_blocks() {
        let completion = json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 8}},
        });
        let message = to_message(completion.to_string().as_bytes()).unwrap();
        assert_eq!(
            message,
            json!({
                "id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-4o",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 7,
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 8},
            })
        );
    }

    #[test]
    fn what_is_not_a_completion_is_none() {
        assert!(to_message(b"{}").is_none());
        assert!(to_message(b"not json").is_none());
        let cut = json!({"choices": [{"finish_reason": "length", "message": {"tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{\"a\": 1"}}]}}]});
        let message = to_message(cut.to_string().as_bytes()).unwrap();
        assert_eq!(message["content"][0]["input"], json!({}));
        assert_eq!(message["stop_reason"], "max_tokens");
        let stopped = json!({"choices": [{"finish_reason": "stop", "message": {"tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}}]});
        let message = to_message(stopped.to_string().as_bytes()).unwrap();
        assert_eq!(message["stop_reason"], "tool_use");
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(stop_reason(finish), stop);
        }
    }
}
