//! What the stages read of a Messages call that has no faithful chat
//! translation (it uses a field a chat completion cannot say) but goes to
//! an Anthropic deployment as it came: its model, `max_tokens` and
//! `stream`, and its text as one prompt, for the token estimate the rate
//! limiter and budgets charge before the answer reports the real count.

use serde_json::{Map, Value, json};

use super::request::{ChatRequest, Refused};

/// Keys whose strings are not prompt text: identifiers, kinds, encoded
/// media and thinking signatures.
const NOT_TEXT: [&str; 9] = [
    "type",
    "id",
    "tool_use_id",
    "media_type",
    "data",
    "signature",
    "url",
    "file_id",
    "role",
];

/// The chat view of `request`, for the stages only: it is never sent.
pub fn estimate_view(request: &Map<String, Value>) -> Result<ChatRequest, Refused> {
    let model = match request.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => model,
        _ => return Err(Refused("model: must be a non-empty string.".into())),
    };
    let Some(max_tokens) = request.get("max_tokens").and_then(Value::as_u64) else {
        return Err(Refused(
            "max_tokens: must be an integer of at least 1.".into(),
        ));
    };
    if !request.get("messages").is_some_and(Value::is_array) {
        return Err(Refused(
            "messages: field required (an array of messages).".into(),
        ));
    }
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let mut text = String::new();
    for part in ["system", "messages", "tools"] {
        if let Some(value) = request.get(part) {
            collect_text(value, &mut text);
        }
    }
    let mut chat = Map::new();
    chat.insert("model".into(), model.into());
    chat.insert("max_tokens".into(), max_tokens.into());
    chat.insert(
        "messages".into(),
        json!([{"role": "user", "content": text}]),
    );
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(ChatRequest { body: chat, stream })
}

/// Every prompt string under `value`, a space after each.
fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(text) => {
            out.push_str(text);
            out.push(' ');
        }
        Value::Array(items) => items.iter().for_each(|item| collect_text(item, out)),
        Value::Object(fields) => {
            for (key, value) in fields {
                if !NOT_TEXT.contains(&key.as_str()) {
                    collect_text(value, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(request: Value) -> Result<ChatRequest, Refused> {
        estimate_view(request.as_object().unwrap())
    }

    #[test]
    fn the_view_holds_the_prompts_text_and_not_its_media_or_signatures() {
        let chat = view(json!({
            "model": "claude", "max_tokens": 9, "stream": true, "top_k": 3,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Look closely.", "signature": "c2ln"}
                ]}
            ]
        }))
        .unwrap();
        assert!(chat.stream);
        let text = chat.body["messages"][0]["content"].as_str().unwrap();
        assert_eq!(text, "Be brief. What is this? Look closely. ");
        assert_eq!(chat.body["max_tokens"], 9);
        assert_eq!(chat.body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn the_view_still_needs_a_model_max_tokens_and_messages() {
        let refused = |request| view(request).unwrap_err().0;
        assert!(refused(json!({"max_tokens": 1, "messages": []})).starts_with("model"));
        assert!(refused(json!({"model": "m", "messages": []})).starts_with("max_tokens"));
        assert!(refused(json!({"model": "m", "max_tokens": 1})).starts_with("messages"));
    }
}
