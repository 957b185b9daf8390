//! A chat completion request written as a Messages request, for an
//! Anthropic deployment. What Messages cannot express is refused by name.

use serde_json::{Map, Value, json};

use crate::anthropic::Refused;

/// `max_tokens` when the chat request sets none: Messages requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn refuse<T>(message: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(message.into()))
}

/// The Messages request for chat request `body`, naming `model`; and
/// whether the client asked for the usage chunk of a stream.
pub fn to_messages(body: &[u8], model: &str) -> Result<(Value, bool), Refused> {
    let Ok(Value::Object(chat)) = serde_json::from_slice::<Value>(body) else {
        return refuse("The request body must be a JSON object.");
    };
    let mut request = Map::new();
    request.insert("model".into(), model.into());
    let mut include_usage = false;
    for (field, value) in &chat {
        match field.as_str() {
            "model" | "messages" => {}
            "max_tokens" | "max_completion_tokens" if value.is_u64() => {
                request.insert("max_tokens".into(), value.clone());
            }
            "temperature" => match value.as_f64() {
                Some(t) if (0.0..=1.0).contains(&t) => {
                    request.insert(field.clone(), value.clone());
                }
                _ => return refuse("temperature: an Anthropic deployment takes 0 to 1."),
            },
            "top_p" if value.is_number() => {
                request.insert(field.clone(), value.clone());
            }
            "stop" => {
                request.insert("stop_sequences".into(), stop(value)?);
            }
            "stream" => {
                request.insert(field.clone(), value.as_bool().unwrap_or(false).into());
            }
            "stream_options" => {
                include_usage = value.get("include_usage").and_then(Value::as_bool) == Some(true);
            }
            "user" if value.is_string() => {
                request.insert("metadata".into(), json!({"user_id": value}));
            }
            "tools" => {
                request.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                request.insert("tool_choice".into(), tool_choice(value)?);
            }
            "parallel_tool_calls" | "n" | "presence_penalty" | "frequency_penalty"
                if is_default(field, value) => {}
            _ if value.is_null() => {}
            other => {
                return refuse(format!(
                    "{other}: not supported by an Anthropic deployment (Messages API)."
                ));
            }
        }
    }
    request
        .entry("max_tokens")
        .or_insert(DEFAULT_MAX_TOKENS.into());
    if chat.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = request
            .entry("tool_choice")
            .or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = true.into();
    }
    let Some(Value::Array(messages)) = chat.get("messages") else {
        return refuse("messages: field required.");
    };
    let (system, turns) = conversation(messages)?;
    if let Some(system) = system {
        request.insert("system".into(), system.into());
    }
    request.insert("messages".into(), Value::Array(turns));
    Ok((Value::Object(request), include_usage))
}

/// A field at the value Messages behaves as anyway.
fn is_default(field: &str, value: &Value) -> bool {
    match field {
        "parallel_tool_calls" => value.is_boolean(),
        "n" => value.as_u64() == Some(1),
        _ => value.as_f64() == Some(0.0),
    }
}

fn stop(value: &Value) -> Result<Value, Refused> {
    match value {
        Value::String(one) => Ok(json!([one])),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
        Value::Null => Ok(json!([])),
        _ => refuse("stop: a string or an array of strings."),
    }
}

fn tools(value: &Value) -> Result<Value, Refused> {
    let Some(items) = value.as_array() else {
        return refuse("tools: must be an array.");
    };
    let mut tools = Vec::with_capacity(items.len());
    for (at, tool) in items.iter().enumerate() {
        let function = tool
            .get("function")
            .filter(|_| tool.get("type") == Some(&json!("function")));
        let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
            return refuse(format!("tools.{at}: only function tools with a name."));
        };
        let schema = function
            .and_then(|f| f.get("parameters"))
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut out = json!({"name": name, "input_schema": schema});
        if let Some(description) = function.and_then(|f| f.get("description")) {
            out["description"] = description.clone();
        }
        tools.push(out);
    }
    Ok(Value::Array(tools))
}

fn tool_choice(value: &Value) -> Result<Value, Refused> {
    match value {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => refuse(format!("tool_choice: `{other}` is not a choice.")),
        },
        _ => match value.get("function").and_then(|f| f.get("name")) {
            Some(Value::String(name)) => Ok(json!({"type": "tool", "name": name})),
            _ => refuse("tool_choice: a mode or a function by name."),
        },
    }
}

/// The system text and the turns: `tool` messages become `tool_result`
/// blocks of a user turn, and consecutive turns of one role are merged
/// (Messages alternates roles).
fn conversation(messages: &[Value]) -> Result<(Option<String>, Vec<Value>), Refused> {
    let mut system: Option<String> = None;
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (at, message) in messages.iter().enumerate() {
        let path = format!("messages.{at}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = plain_text(message.get("content"), &path)?;
                let joined = system.map_or(text.clone(), |before| format!("{before}\n\n{text}"));
                system = Some(joined);
                continue;
            }
            "user" => ("user", user_blocks(message.get("content"), &path)?),
            "assistant" => ("assistant", assistant_blocks(message, &path)?),
            "tool" => ("user", vec![tool_result(message, &path)?]),
            other => return refuse(format!("{path}.role: `{other}` is not a role.")),
        };
        match turns.last_mut() {
            Some((last, merged)) if last == role => merged.extend(blocks),
            _ => turns.push((role.to_owned(), blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

/// Text content: a string, or text parts joined.
fn plain_text(content: Option<&Value>, path: &str) -> Result<String, Refused> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(text) if part.get("type") == Some(&json!("text")) => Ok(text),
                _ => refuse(format!("{path}.content: only text here.")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.concat()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => refuse(format!("{path}.content: a string or text parts.")),
    }
}

fn user_blocks(content: Option<&Value>, path: &str) -> Result<Vec<Value>, Refused> {
    let Some(Value::Array(parts)) = content else {
        let text = plain_text(content, path)?;
        return Ok(vec![json!({"type": "text", "text": text})]);
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (at, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => blocks.push(json!({"type": "text", "text": part.get("text")})),
            Some("image_url") => blocks.push(image(part, &format!("{path}.content.{at}"))?),
            _ => {
                return refuse(format!(
                    "{path}.content.{at}: only text and image_url parts on an Anthropic deployment."
                ));
            }
        }
    }
    Ok(blocks)
}

fn image(part: &Value, path: &str) -> Result<Value, Refused> {
    let url = part
        .get("image_url")
        .and_then(|image| image.get("url"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(inline) = url.strip_prefix("data:") {
        let Some((media_type, data)) = inline.split_once(";base64,") else {
            return refuse(format!("{path}: a data URL must be base64."));
        };
        let source = json!({"type": "base64", "media_type": media_type, "data": data});
        return Ok(json!({"type": "image", "source": source}));
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

fn assistant_blocks(message: &Value, path: &str) -> Result<Vec<Value>, Refused> {
    let mut blocks = Vec::new();
    let text = plain_text(message.get("content"), path)?;
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (at, call) in calls.into_iter().flatten().enumerate() {
        let function = call.get("function");
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let Ok(input) = serde_json::from_str::<Value>(if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        }) else {
            return refuse(format!(
                "{path}.tool_calls.{at}.function.arguments: not JSON."
            ));
        };
        blocks.push(json!({
            "type": "tool_use", "id": call.get("id"),
            "name": function.and_then(|f| f.get("name")), "input": input,
        }));
    }
    if blocks.is_empty() {
        blocks.push(json!({"type": "text", "text": ""}));
    }
    Ok(blocks)
}

fn tool_result(message: &Value, path: &str) -> Result<Value, Refused> {
    let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
        return refuse(format!("{path}.tool_call_id: field required."));
    };
    let content = plain_text(message.get("content"), path)?;
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(chat: Value) -> Value {
        to_messages(chat.to_string().as_bytes(), "claude-x")
            .unwrap()
            .0
    }

    #[test]
    fn a_chat_with_tools_becomes_a_messages_request() {
        let request = messages(json!({
            "model": "gpt-4o", "max_completion_tokens": 50, "stop": "END", "user": "u",
            "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "More"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            ],
        }));
        assert_eq!(
            request,
            json!({
                "model": "claude-x", "max_tokens": 50, "stop_sequences": ["END"],
                "metadata": {"user_id": "u"}, "stream": true, "system": "Be brief.",
                "tools": [{"name": "f", "description": "F.", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
                        {"type": "text", "text": "More"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                ],
            })
        );
    }

    #[test]
    fn what_messages_cannot_say_is_refused() {
        let refused = |extra: Value| {
            let mut chat = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            for (key, value) in extra.as_object().unwrap() {
                chat[key] = value.clone();
            }
            to_messages(chat.to_string().as_bytes(), "c").unwrap_err().0
        };
        assert!(refused(json!({"n": 2})).starts_with("n:"));
        assert!(refused(json!({"logprobs": true})).starts_with("logprobs"));
        assert!(refused(json!({"temperature": 1.5})).starts_with("temperature"));
        assert!(
            refused(json!({"response_format": {"type": "json_object"}}))
                .starts_with("response_format")
        );
        let defaults = messages(
            json!({"model": "m", "n": 1, "presence_penalty": 0, "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(defaults["max_tokens"], DEFAULT_MAX_TOKENS);
    }
}
