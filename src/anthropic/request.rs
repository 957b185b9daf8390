//! A Messages request read by its schema and written as a chat completion
//! request. Every field is either translated or refused by name.

use serde_json::{Map, Value, json};

/// The chat completion request a Messages request becomes.
#[derive(Debug)]
pub struct ChatRequest {
    pub body: Map<String, Value>,
    pub stream: bool,
}

/// Why a Messages request cannot be served: a 400 `invalid_request_error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse<T>(message: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(message.into()))
}

/// The most stop sequences a chat completion takes.
const MAX_STOP: usize = 4;

/// Reads `body` (a Messages request) and writes its chat completion.
pub fn to_chat(body: &[u8]) -> Result<ChatRequest, Refused> {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
        return refuse("The request body must be a JSON object (a Messages request).");
    };
    chat_of(&request)
}

/// The chat completion of a Messages request already read as JSON.
pub fn chat_of(request: &Map<String, Value>) -> Result<ChatRequest, Refused> {
    let mut chat = Map::new();
    let mut messages = Vec::new();
    let mut stream = false;
    for (field, value) in request {
        match field.as_str() {
            "model" => match value.as_str() {
                Some(model) if !model.is_empty() => {
                    chat.insert("model".into(), value.clone());
                }
                _ => return refuse("model: must be a non-empty string."),
            },
            "max_tokens" => match value.as_u64() {
                Some(max) if max >= 1 => {
                    chat.insert("max_tokens".into(), max.into());
                }
                _ => return refuse("max_tokens: must be an integer of at least 1."),
            },
            "messages" | "system" => {}
            "stop_sequences" => {
                chat.insert("stop".into(), stop_sequences(value)?);
            }
            "temperature" | "top_p" => {
                if !value.is_number() {
                    return refuse(format!("{field}: must be a number."));
                }
                chat.insert(field.clone(), value.clone());
            }
            "stream" => stream = value.as_bool().ok_or_else(|| boolean("stream"))?,
            "metadata" => {
                if let Some(user) = user_id(value)? {
                    chat.insert("user".into(), user.into());
                }
            }
            // An empty list is no tools: OpenAI refuses `tools: []`.
            "tools" if value.as_array().is_some_and(Vec::is_empty) => {}
            "tools" => {
                chat.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => tool_choice(value, &mut chat)?,
            // `adaptive` lets the model choose whether to think: answering
            // without thinking is one of its outcomes. `enabled` (thinking
            // required, with a budget) is refused below.
            "thinking" if matches!(thinking_type(value), Some("disabled" | "adaptive")) => {}
            // A prompt-caching mark, like those on blocks: it asks nothing
            // of the answer, and the upstream caches prompts its own way.
            "cache_control" => {}
            // Server-side edits of a long conversation (clearing old tool
            // results or thinking): not applied, the whole conversation
            // goes upstream, which answers it the same.
            "context_management" => {}
            "output_config" => output_config(value, &mut chat)?,
            "top_k" | "thinking" | "container" | "mcp_servers" | "service_tier" => {
                return refuse(format!(
                    "{field}: not supported for this model: a chat completion cannot say it \
                     (a model with an Anthropic deployment takes it)."
                ));
            }
            other => return refuse(format!("{other}: unknown field.")),
        }
    }
    for required in ["model", "max_tokens"] {
        if !chat.contains_key(required) {
            return refuse(format!("{required}: field required."));
        }
    }
    if let Some(system) = request.get("system") {
        messages.push(json!({"role": "system", "content": system_content(system)?}));
    }
    let Some(Value::Array(turns)) = request.get("messages") else {
        return refuse("messages: field required (an array of messages).");
    };
    if turns.is_empty() {
        return refuse("messages: at least one message is required.");
    }
    for (at, turn) in turns.iter().enumerate() {
        write_turn(turn, at, &mut messages)?;
    }
    chat.insert("messages".into(), Value::Array(messages));
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(ChatRequest { body: chat, stream })
}

fn thinking_type(value: &Value) -> Option<&str> {
    value.get("type").and_then(Value::as_str)
}

/// `output_config`: `effort` (how much the model works) has no chat
/// equivalent every deployment takes and is left to the model; `format`
/// (a JSON schema the answer follows) is `response_format`.
fn output_config(value: &Value, chat: &mut Map<String, Value>) -> Result<(), Refused> {
    let Some(config) = value.as_object() else {
        return refuse("output_config: must be an object.");
    };
    for (field, value) in config {
        match (field.as_str(), value.get("type").and_then(Value::as_str)) {
            ("effort", _) => {}
            ("format", Some("json_schema")) => {
                let schema = value.get("schema").cloned().unwrap_or_else(|| json!({}));
                let format = json!({"name": "output", "schema": schema, "strict": true});
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": format}),
                );
            }
            (other, _) => {
                return refuse(format!(
                    "output_config.{other}: not supported by this gateway."
                ));
            }
        }
    }
    Ok(())
}

fn boolean(field: &str) -> Refused {
    Refused(format!("{field}: must be true or false."))
}

fn stop_sequences(value: &Value) -> Result<Value, Refused> {
    let Some(items) = value.as_array() else {
        return refuse("stop_sequences: must be an array of strings.");
    };
    if items.len() > MAX_STOP || !items.iter().all(Value::is_string) {
        return refuse(format!(
            "stop_sequences: at most {MAX_STOP} strings (the most a chat completion takes)."
        ));
    }
    Ok(value.clone())
}

fn user_id(value: &Value) -> Result<Option<String>, Refused> {
    let Some(metadata) = value.as_object() else {
        return refuse("metadata: must be an object.");
    };
    let mut user = None;
    for (field, value) in metadata {
        match (field.as_str(), value) {
            ("user_id", Value::String(id)) => user = Some(id.clone()),
            ("user_id", Value::Null) => {}
            ("user_id", _) => return refuse("metadata.user_id: must be a string."),
            (other, _) => return refuse(format!("metadata.{other}: unknown field.")),
        }
    }
    Ok(user)
}

/// Custom tools (no `type`, or `custom`); server tools cannot be run by an
/// OpenAI-compatible deployment.
fn tools(value: &Value) -> Result<Value, Refused> {
    let Some(items) = value.as_array() else {
        return refuse("tools: must be an array.");
    };
    let mut functions = Vec::with_capacity(items.len());
    for (at, tool) in items.iter().enumerate() {
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("custom");
        if kind != "custom" {
            return refuse(format!(
                "tools.{at}.type: `{kind}` is a server tool, which this gateway cannot run."
            ));
        }
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return refuse(format!("tools.{at}.name: field required."));
        };
        let Some(schema) = tool.get("input_schema").filter(|s| s.is_object()) else {
            return refuse(format!(
                "tools.{at}.input_schema: field required (an object)."
            ));
        };
        let mut function = json!({"name": name, "parameters": schema});
        if let Some(description) = tool.get("description").and_then(Value::as_str) {
            function["description"] = description.into();
        }
        functions.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(functions))
}

fn tool_choice(value: &Value, chat: &mut Map<String, Value>) -> Result<(), Refused> {
    let choice = match value.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match value.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => return refuse("tool_choice.name: field required for type `tool`."),
        },
        _ => return refuse("tool_choice.type: one of auto, any, tool, none."),
    };
    chat.insert("tool_choice".into(), choice);
    match value.get("disable_parallel_tool_use") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            chat.insert("parallel_tool_calls".into(), false.into());
        }
        Some(_) => return Err(boolean("tool_choice.disable_parallel_tool_use")),
    }
    Ok(())
}

/// `system`: a string, or text blocks joined into one (every
/// OpenAI-compatible server takes a string system message).
fn system_content(system: &Value) -> Result<Value, Refused> {
    match system {
        Value::String(_) => Ok(system.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (at, block) in blocks.iter().enumerate() {
                texts.push(text_of(block, &format!("system.{at}"))?);
            }
            Ok(Value::String(texts.join("\n")))
        }
        _ => refuse("system: must be a string or an array of text blocks."),
    }
}

/// A text block's text, or a refusal naming `path`.
fn text_of<'a>(block: &'a Value, path: &str) -> Result<&'a str, Refused> {
    match (block.get("type").and_then(Value::as_str), block.get("text")) {
        (Some("text"), Some(Value::String(text))) => Ok(text),
        (Some("text"), _) => refuse(format!("{path}.text: field required (a string).")),
        (Some(kind), _) => refuse(format!("{path}: a `{kind}` block is not allowed here.")),
        (None, _) => refuse(format!("{path}.type: field required.")),
    }
}

/// One Messages turn as chat messages: a user turn's tool results become
/// `tool` messages (first, as they answer the previous assistant turn).
fn write_turn(turn: &Value, at: usize, messages: &mut Vec<Value>) -> Result<(), Refused> {
    let path = format!("messages.{at}");
    let role = turn.get("role").and_then(Value::as_str);
    let content = turn.get("content");
    match (role, content) {
        (Some("user" | "assistant"), Some(Value::String(text))) => {
            messages.push(json!({"role": role, "content": text}));
            Ok(())
        }
        // A system turn mid-conversation (a beta coding agents use): a
        // chat completion takes a system message anywhere.
        (Some("system"), Some(content)) => {
            messages.push(json!({"role": "system", "content": system_content(content)?}));
            Ok(())
        }
        (Some("user"), Some(Value::Array(blocks))) => user_blocks(blocks, &path, messages),
        (Some("assistant"), Some(Value::Array(blocks))) => {
            messages.push(assistant_blocks(blocks, &path)?);
            Ok(())
        }
        (Some("user" | "assistant"), _) => refuse(format!(
            "{path}.content: must be a string or an array of content blocks."
        )),
        _ => refuse(format!(
            "{path}.role: must be `user`, `assistant` or `system`."
        )),
    }
}

fn user_blocks(blocks: &[Value], path: &str, messages: &mut Vec<Value>) -> Result<(), Refused> {
    let mut parts = Vec::new();
    for (at, block) in blocks.iter().enumerate() {
        let here = format!("{path}.content.{at}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": text_of(block, &here)?})),
            Some("image") => parts.push(image(block, &here)?),
            // A tool's images (a file read, a screenshot) go in the user
            // message after the tool messages: a tool message holds text.
            Some("tool_result") => messages.push(tool_result(block, &here, &mut parts)?),
            Some(kind) => {
                return refuse(format!(
                    "{here}: `{kind}` blocks are not supported by this gateway."
                ));
            }
            None => return refuse(format!("{here}.type: field required.")),
        }
    }
    if !parts.is_empty() {
        messages.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn image(block: &Value, path: &str) -> Result<Value, Refused> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let url = match field("type") {
        Some("base64") => match (field("media_type"), field("data")) {
            (Some(media), Some(data)) => format!("data:{media};base64,{data}"),
            _ => return refuse(format!("{path}.source: media_type and data required.")),
        },
        Some("url") => match field("url") {
            Some(url) => url.to_owned(),
            None => return refuse(format!("{path}.source.url: field required.")),
        },
        _ => return refuse(format!("{path}.source.type: `base64` or `url`.")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result as a `tool` message; `is_error` is said in its text, the
/// one place a chat completion can carry it.
fn tool_result(block: &Value, path: &str, images: &mut Vec<Value>) -> Result<Value, Refused> {
    let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
        return refuse(format!("{path}.tool_use_id: field required."));
    };
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => {
            let mut joined = Vec::with_capacity(blocks.len());
            for (at, inner) in blocks.iter().enumerate() {
                let here = format!("{path}.content.{at}");
                match inner.get("type").and_then(Value::as_str) {
                    Some("image") => images.push(image(inner, &here)?),
                    _ => joined.push(text_of(inner, &here)?),
                }
            }
            joined.join("\n")
        }
        Some(_) => return refuse(format!("{path}.content: a string or text blocks.")),
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn assistant_blocks(blocks: &[Value], path: &str) -> Result<Value, Refused> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (at, block) in blocks.iter().enumerate() {
        let here = format!("{path}.content.{at}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(text_of(block, &here)?),
            Some("tool_use") => calls.push(tool_use(block, &here)?),
            Some(kind) => {
                return refuse(format!(
                    "{here}: `{kind}` blocks are not supported in an assistant turn by this gateway."
                ));
            }
            None => return refuse(format!("{here}.type: field required.")),
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
        if text.is_empty() {
            message["content"] = Value::Null;
        }
    }
    Ok(message)
}

fn tool_use(block: &Value, path: &str) -> Result<Value, Refused> {
    let field = |name: &str| block.get(name).and_then(Value::as_str);
    let (Some(id), Some(name)) = (field("id"), field("name")) else {
        return refuse(format!("{path}: id and name required."));
    };
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "id": id, "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(request: Value) -> Value {
        Value::Object(to_chat(request.to_string().as_bytes()).unwrap().body)
    }

    fn refused(request: Value) -> String {
        to_chat(request.to_string().as_bytes()).unwrap_err().0
    }

    #[test]
    fn a_conversation_with_tools_becomes_its_chat_completion() {
        let translated = chat(json!({
            "model": "gpt-4o", "max_tokens": 100, "system": "Be brief.",
            "stop_sequences": ["END"], "temperature": 0.5, "stream": true,
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "weather", "description": "Weather.", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "And tomorrow?"}]},
            ],
        }));
        assert_eq!(
            translated,
            json!({
                "model": "gpt-4o", "max_tokens": 100, "stop": ["END"], "temperature": 0.5,
                "user": "u-1", "stream": true, "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather.", "parameters": {"type": "object"}}}],
                "tool_choice": "required", "parallel_tool_calls": false,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "Looking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
                    {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
                ],
            })
        );
    }

    #[test]
    fn images_become_image_urls() {
        let translated = chat(json!({
            "model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}],
        }));
        let parts = &translated["messages"][0]["content"];
        assert_eq!(parts[0]["image_url"]["url"], "data:image/png;base64,AAAA");
        assert_eq!(parts[1]["image_url"]["url"], "https://example.com/a.png");
    }

    #[test]
    fn what_a_chat_completion_cannot_say_is_refused_by_name() {
        let base = |extra: Value| {
            let mut request = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
            for (key, value) in extra.as_object().unwrap() {
                request[key] = value.clone();
            }
            refused(request)
        };
        assert!(base(json!({"top_k": 5})).starts_with("top_k"));
        assert!(
            base(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}))
                .starts_with("thinking")
        );
        assert!(
            base(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}))
                .contains("server tool")
        );
        assert!(base(json!({"stop_sequences": ["a", "b", "c", "d", "e"]})).contains("at most 4"));
        assert!(base(json!({"frobnicate": 1})).starts_with("frobnicate"));
        assert!(base(json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]})).contains("document"));
        assert!(base(json!({"messages": []})).contains("at least one"));
        assert!(
            refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
                .starts_with("max_tokens")
        );
        assert!(refused(json!([1])).contains("JSON object"));
        let disabled = chat(
            json!({"model": "m", "max_tokens": 5, "thinking": {"type": "disabled"}, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert!(disabled.get("thinking").is_none());
        // What a coding agent sends along: accepted, with no effect but the
        // schema, which becomes response_format.
        let agent = chat(
            json!({"model": "m", "max_tokens": 5, "thinking": {"type": "adaptive"},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
            "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(
            agent["response_format"]["json_schema"]["schema"],
            json!({"type": "object"})
        );
        let mid = chat(json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "hi"}, {"role": "system", "content": "Agents: a, b."}]}));
        assert_eq!(
            mid["messages"][1],
            json!({"role": "system", "content": "Agents: a, b."})
        );
        assert!(agent.get("thinking").is_none() && agent.get("context_management").is_none());
    }

    #[test]
    fn a_tools_images_follow_its_result_in_a_user_message() {
        let translated = chat(json!({
            "model": "m", "max_tokens": 5, "tools": [],
            "system": [{"type": "text", "text": "A."}, {"type": "text", "text": "B."}],
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "text", "text": "the file"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}]}]}],
        }));
        assert!(translated.get("tools").is_none());
        let messages = translated["messages"].as_array().unwrap();
        assert_eq!(messages[0], json!({"role": "system", "content": "A.\nB."}));
        assert_eq!(
            messages[1],
            json!({"role": "tool", "tool_call_id": "t1", "content": "the file"})
        );
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(
            messages[2]["content"][0]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
    }

    #[test]
    fn a_failed_tool_result_says_so_in_its_text() {
        let translated = chat(json!({
            "model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": true,
                 "content": [{"type": "text", "text": "timeout"}]}]}],
        }));
        assert_eq!(translated["messages"][0]["content"], "Error: timeout");
        assert_eq!(translated["messages"].as_array().unwrap().len(), 1);
    }
}
