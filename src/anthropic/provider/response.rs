//! An Anthropic answer written as a chat completion: the whole message,
//! and an error body in OpenAI's shape.

use serde_json::{Value, json};

/// The chat `finish_reason` for a Messages `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// The completion's id for a message's: `chatcmpl-` and its own suffix.
pub fn completion_id(message_id: Option<&str>) -> String {
    let id = message_id.unwrap_or_default();
    format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id))
}

/// Chat `usage` from Messages `usage`: cache reads and writes are prompt
/// tokens too (Messages counts them apart), cache reads `cached_tokens`.
pub fn chat_usage(usage: &Value) -> Value {
    let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    let prompt = count("input_tokens") + cached + count("cache_creation_input_tokens");
    let completion = count("output_tokens");
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The chat completion for a Messages answer `body`, or `None`.
pub fn to_completion(body: &[u8], created: u64) -> Option<Value> {
    let message: Value = serde_json::from_slice(body).ok()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message.get("content")?.as_array()? {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text")?.as_str()?),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id")?, "type": "function",
                "function": {"name": block.get("name")?,
                             "arguments": block.get("input").unwrap_or(&json!({})).to_string()},
            })),
            // Thinking is never asked for; other blocks carry no answer text.
            _ => {}
        }
    }
    let mut reply = json!({"role": "assistant", "content": text, "refusal": null});
    if !calls.is_empty() {
        reply["tool_calls"] = Value::Array(calls);
        if text.is_empty() {
            reply["content"] = Value::Null;
        }
    }
    let stop = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    Some(json!({
        "id": completion_id(message.get("id").and_then(Value::as_str)),
        "object": "chat.completion", "created": created,
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(stop),
                     "logprobs": null}],
        "usage": chat_usage(message.get("usage").unwrap_or(&Value::Null)),
    }))
}

/// An Anthropic error body in OpenAI's shape: its message, its `type` as
/// the `code`.
pub fn to_openai_error(body: &[u8]) -> Option<Value> {
    let error: Value = serde_json::from_slice(body).ok()?;
    let error = error.get("error")?;
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let openai_type = match kind {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "authentication_error" | "permission_error" => "invalid_request_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    };
    Some(json!({"error": {
        "message": error.get("message").and_then(Value::as_str).unwrap_or("The provider failed."),
        "type": openai_type, "param": null, "code": kind,
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_a_tool_call_becomes_a_completion() {
        let message = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4,
                      "cache_creation_input_tokens": 2},
        });
        let completion = to_completion(message.to_string().as_bytes(), 7).unwrap();
        assert_eq!(completion["id"], "chatcmpl-01");
        assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
        let reply = &completion["choices"][0]["message"];
        assert_eq!(reply["content"], "Checking.");
        assert_eq!(reply["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(completion["usage"]["prompt_tokens"], 16);
        assert_eq!(
            completion["usage"]["prompt_tokens_details"]["cached_tokens"],
            4
        );
        assert_eq!(completion["usage"]["total_tokens"], 21);
    }

    #[test]
    fn errors_keep_their_message_and_type() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let error = to_openai_error(body).unwrap();
        assert_eq!(error["error"]["message"], "Overloaded");
        assert_eq!(error["error"]["code"], "overloaded_error");
        assert_eq!(error["error"]["type"], "server_error");
        assert!(to_openai_error(b"<html>").is_none());
    }
}
