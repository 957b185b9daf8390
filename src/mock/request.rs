//! Reads and checks the request fields that shape an answer: `n`,
//! `logprobs`, `tools`/`tool_choice` and `response_format` (chat), and
//! their Responses API counterparts. A bad value is refused the way the API
//! refuses it, naming the field in `param`.

use serde_json::{Value, json};

use super::invalid::{Checked, Invalid, boolean, integer_in};
use crate::util::text::clip;

/// What every choice of an answer is.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Text,
    /// Content that is JSON satisfying the schema.
    Json(Value),
    /// A call of the named function with arguments satisfying `parameters`.
    Call {
        name: String,
        parameters: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub n: usize,
    /// `Some(top)` when log probabilities are asked for, `top` alternatives each.
    pub logprobs: Option<usize>,
    pub shape: Shape,
}

/// The most choices the API generates for one request.
const MAX_N: i64 = 128;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Where a dialect keeps a function tool's fields: chat nests them under
/// `function`, the Responses API has them flat.
#[derive(Clone, Copy)]
enum Dialect {
    Chat,
    Responses,
}

impl Dialect {
    fn function(self, tool: &Value) -> (&Value, &'static str) {
        match self {
            Self::Chat => (&tool["function"], ".function"),
            Self::Responses => (tool, ""),
        }
    }
}

pub fn chat(request: &Value, seed: u64) -> Checked<Plan> {
    let messages = messages(request)?;
    let n = integer_in(request, "n", 1, MAX_N)?.unwrap_or(1) as usize;
    let top = integer_in(request, "top_logprobs", 0, 20)?;
    let logprobs = boolean(request, "logprobs")?;
    if top.is_some() && !logprobs {
        return Err(Invalid::value(
            "top_logprobs",
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.".into(),
        ));
    }
    let tools = tools(request, Dialect::Chat)?;
    let called_back = messages.last().is_some_and(|m| m["role"] == "tool");
    let call = tool_choice(request, &tools, Dialect::Chat, called_back, seed)?;
    let format = match request.get("response_format") {
        None | Some(Value::Null) => Shape::Text,
        Some(format) => text_format(format, "response_format", Dialect::Chat)?,
    };
    if format == Shape::Json(Value::Null) && !mentions_json(&request["messages"]) {
        return Err(Invalid::value(
            "messages",
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.".into(),
        ));
    }
    Ok(Plan {
        n,
        logprobs: logprobs.then(|| top.unwrap_or(0) as usize),
        shape: call.unwrap_or_else(|| with_prompt_schema(format, &request["messages"])),
    })
}

pub fn completions(request: &Value) -> Checked<Plan> {
    match request.get("prompt") {
        None => return Err(Invalid::missing("prompt")),
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(other) => return Err(Invalid::wrong_type("prompt", "a string or array", other)),
    }
    let n = integer_in(request, "n", 1, MAX_N)?.unwrap_or(1) as usize;
    // The legacy API's `logprobs` is the number of alternatives, up to 5.
    let logprobs = integer_in(request, "logprobs", 0, 5)?.map(|top| top as usize);
    Ok(Plan {
        n,
        logprobs,
        shape: Shape::Text,
    })
}

pub fn responses(request: &Value, seed: u64) -> Checked<Plan> {
    let top = integer_in(request, "top_logprobs", 0, 20)?;
    let included = request["include"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i == "message.output_text.logprobs"));
    let tools = tools(request, Dialect::Responses)?;
    let called_back = request["input"]
        .as_array()
        .and_then(|items| items.last())
        .is_some_and(|item| item["type"] == "function_call_output");
    let call = tool_choice(request, &tools, Dialect::Responses, called_back, seed)?;
    let format = match request["text"].get("format") {
        None | Some(Value::Null) => Shape::Text,
        Some(format) => text_format(format, "text.format", Dialect::Responses)?,
    };
    if format == Shape::Json(Value::Null) && !mentions_json(&request["input"]) {
        return Err(Invalid::value(
            "input",
            "Response input messages must contain the word 'json' in some form to use 'text.format' of type 'json_object'.".into(),
        ));
    }
    let conversation = json!([&request["instructions"], &request["input"]]);
    Ok(Plan {
        n: 1,
        logprobs: (included || top.is_some()).then(|| top.unwrap_or(0) as usize),
        shape: call.unwrap_or_else(|| with_prompt_schema(format, &conversation)),
    })
}

fn messages(request: &Value) -> Checked<&Vec<Value>> {
    let messages = match request.get("messages") {
        None => return Err(Invalid::missing("messages")),
        Some(Value::Array(messages)) => messages,
        Some(other) => {
            return Err(Invalid::wrong_type(
                "messages",
                "an array of objects",
                other,
            ));
        }
    };
    if messages.is_empty() {
        return Err(Invalid::value(
            "messages",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.".into(),
        ));
    }
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}].role");
        match message.get("role") {
            _ if !message.is_object() => {
                return Err(Invalid::wrong_type(
                    &format!("messages[{i}]"),
                    "an object",
                    message,
                ));
            }
            None => return Err(Invalid::missing(&param)),
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => {}
            Some(Value::String(role)) => return Err(Invalid::unsupported(&param, role, ROLES)),
            Some(other) => return Err(Invalid::wrong_type(&param, "a string", other)),
        }
    }
    Ok(messages)
}

/// The function tools, as (name, parameters). Other tool kinds (built-in
/// tools of the Responses API, custom tools) are accepted and never called.
fn tools(request: &Value, dialect: Dialect) -> Checked<Vec<(String, Value)>> {
    let tools = match request.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(other) => return Err(Invalid::wrong_type("tools", "an array", other)),
    };
    let mut functions = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        match tool.get("type") {
            None => return Err(Invalid::missing(&format!("tools[{i}].type"))),
            Some(kind) if kind != "function" => continue,
            Some(_) => {}
        }
        let (function, prefix) = dialect.function(tool);
        let param = format!("tools[{i}]{prefix}.name");
        let name = match function.get("name") {
            None => return Err(Invalid::missing(&param)),
            Some(Value::String(name)) => name,
            Some(other) => return Err(Invalid::wrong_type(&param, "a string", other)),
        };
        check_name(name, &param)?;
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(schema @ (Value::Object(_) | Value::Bool(_))) => schema.clone(),
            Some(other) => {
                let param = format!("tools[{i}]{prefix}.parameters");
                return Err(Invalid::wrong_type(&param, "an object", other));
            }
        };
        functions.push((name.clone(), parameters));
    }
    Ok(functions)
}

/// Function and schema names: what the API's pattern allows.
fn check_name(name: &str, param: &str) -> Checked<()> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        return Ok(());
    }
    Err(Invalid::value(
        param,
        format!(
            "Invalid '{param}': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'."
        ),
    ))
}

/// The call to make, if any. `auto` calls a tool unless the conversation
/// just returned a tool's result, so an agent loop built on the mock ends.
fn tool_choice(
    request: &Value,
    tools: &[(String, Value)],
    dialect: Dialect,
    called_back: bool,
    seed: u64,
) -> Checked<Option<Shape>> {
    let call = |(name, parameters): &(String, Value)| Shape::Call {
        name: name.clone(),
        parameters: parameters.clone(),
    };
    let any = || tools.get(seed as usize % tools.len().max(1)).map(call);
    let choice = request.get("tool_choice").unwrap_or(&Value::Null);
    match choice {
        Value::Null | Value::String(_) if choice == "auto" || choice.is_null() => {
            Ok(if called_back { None } else { any() })
        }
        Value::String(mode) if mode == "none" => Ok(None),
        Value::String(mode) if mode == "required" => any().map(Some).ok_or_else(no_tools),
        Value::String(mode) => Err(Invalid::unsupported(
            "tool_choice",
            mode,
            &["none", "auto", "required"],
        )),
        Value::Object(_) if choice["type"] == "function" => {
            let (function, prefix) = dialect.function(choice);
            let Some(name) = function["name"].as_str() else {
                return Err(Invalid::missing(&format!("tool_choice{prefix}.name")));
            };
            match tools.iter().find(|(tool, _)| tool == name) {
                Some(tool) => Ok(Some(call(tool))),
                None if tools.is_empty() => Err(no_tools()),
                None => Err(Invalid::value(
                    "tool_choice",
                    format!(
                        "Invalid value for 'tool_choice': function '{}' not found in 'tools'.",
                        clip(name)
                    ),
                )),
            }
        }
        // `allowed_tools` and built-in tool choices: as `auto`.
        Value::Object(_) => Ok(if called_back { None } else { any() }),
        other => Err(Invalid::wrong_type(
            "tool_choice",
            "a string or object",
            other,
        )),
    }
}

fn no_tools() -> Invalid {
    Invalid::value(
        "tool_choice",
        "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".into(),
    )
}

/// `response_format` (chat, schema nested under `json_schema`) or
/// `text.format` (Responses, flat). JSON mode is `Json(Null)`.
fn text_format(format: &Value, param: &str, dialect: Dialect) -> Checked<Shape> {
    let Value::Object(_) = format else {
        return Err(Invalid::wrong_type(param, "an object", format));
    };
    let kinds = ["text", "json_object", "json_schema"];
    let type_param = format!("{param}.type");
    match format.get("type") {
        None => Err(Invalid::missing(&type_param)),
        Some(kind) if kind == "text" => Ok(Shape::Text),
        Some(kind) if kind == "json_object" => Ok(Shape::Json(Value::Null)),
        Some(kind) if kind == "json_schema" => {
            let (spec, prefix) = match dialect {
                Dialect::Chat => (&format["json_schema"], format!("{param}.json_schema")),
                Dialect::Responses => (format, param.to_owned()),
            };
            if spec.is_null() {
                return Err(Invalid::missing(&prefix));
            }
            let param = format!("{prefix}.name");
            match spec.get("name") {
                Some(Value::String(name)) => check_name(name, &param)?,
                _ => return Err(Invalid::missing(&param)),
            }
            Ok(Shape::Json(
                spec.get("schema").cloned().unwrap_or(json!({})),
            ))
        }
        Some(Value::String(kind)) => Err(Invalid::unsupported(&type_param, kind, &kinds)),
        Some(other) => Err(Invalid::wrong_type(&type_param, "a string", other)),
    }
}

/// JSON mode needs the word in the conversation, or the model may never
/// stop; the API refuses the request instead.
/// JSON mode (`json_object`), or plain text asking for JSON, with a JSON
/// schema in the prompt: an answer that satisfies the schema.
fn with_prompt_schema(format: Shape, conversation: &Value) -> Shape {
    match format {
        Shape::Json(Value::Null) | Shape::Text if mentions_json(conversation) => {
            match super::prompt_schema::schema_in(conversation) {
                Some(schema) => Shape::Json(schema),
                None => format,
            }
        }
        other => other,
    }
}

fn mentions_json(conversation: &Value) -> bool {
    conversation
        .to_string()
        .to_ascii_lowercase()
        .contains("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Value {
        json!([{"role": "user", "content": text}])
    }

    fn refused(request: Value) -> Invalid {
        chat(&request, 0).unwrap_err()
    }

    #[test]
    fn bad_fields_are_refused_naming_the_field() {
        let cases = [
            (json!({}), "messages"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "bot"}]}), "messages[0].role"),
            (json!({"messages": user("x"), "n": 0}), "n"),
            (json!({"messages": user("x"), "n": 1.5}), "n"),
            (json!({"messages": user("x"), "n": 129}), "n"),
            (
                json!({"messages": user("x"), "logprobs": "yes"}),
                "logprobs",
            ),
            (
                json!({"messages": user("x"), "top_logprobs": 2}),
                "top_logprobs",
            ),
            (
                json!({"messages": user("x"), "logprobs": true, "top_logprobs": 21}),
                "top_logprobs",
            ),
            (
                json!({"messages": user("x"), "tools": [{"type": "function", "function": {}}]}),
                "tools[0].function.name",
            ),
            (
                json!({"messages": user("x"), "tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools[0].function.name",
            ),
            (json!({"messages": user("x"), "tools": {}}), "tools"),
            (
                json!({"messages": user("x"), "tool_choice": "required"}),
                "tool_choice",
            ),
            (
                json!({"messages": user("x"), "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"messages": user("x"), "response_format": {"type": "xml"}}),
                "response_format.type",
            ),
            (
                json!({"messages": user("x"), "response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
            ),
            (
                json!({"messages": user("x"), "response_format": {"type": "json_schema", "json_schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"messages": user("x"), "response_format": {"type": "json_object"}}),
                "messages",
            ),
        ];
        for (request, param) in cases {
            let error = refused(request.clone());
            assert_eq!(error.param.as_deref(), Some(param), "{request}: {error:?}");
            assert_eq!(error.status, 400);
        }
    }

    #[test]
    fn tool_choice_decides_the_call() {
        let tools = json!([
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "b"}}
        ]);
        let plan = |choice: Value, messages: Value| {
            chat(
                &json!({"messages": messages, "tools": tools, "tool_choice": choice}),
                1,
            )
            .unwrap()
            .shape
        };
        let named = json!({"type": "function", "function": {"name": "a"}});
        assert!(matches!(plan(named, user("x")), Shape::Call { name, .. } if name == "a"));
        assert_eq!(plan(json!("none"), user("x")), Shape::Text);
        assert!(matches!(plan(json!("auto"), user("x")), Shape::Call { .. }));
        let answered = json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "1"}]);
        assert_eq!(plan(json!("auto"), answered.clone()), Shape::Text);
        assert!(matches!(
            plan(json!("required"), answered),
            Shape::Call { .. }
        ));
        let missing = json!({"type": "function", "function": {"name": "zzz"}});
        let error = chat(
            &json!({"messages": user("x"), "tools": tools, "tool_choice": missing}),
            1,
        );
        assert_eq!(error.unwrap_err().param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn formats_logprobs_and_n() {
        let plan = chat(
            &json!({"messages": user("x"), "n": 3, "logprobs": true, "top_logprobs": 2,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}}),
            0,
        )
        .unwrap();
        assert_eq!(plan.n, 3);
        assert_eq!(plan.logprobs, Some(2));
        assert_eq!(plan.shape, Shape::Json(json!({"type": "object"})));
        let json_mode =
            json!({"messages": user("answer in JSON"), "response_format": {"type": "json_object"}});
        assert_eq!(chat(&json_mode, 0).unwrap().shape, Shape::Json(Value::Null));
    }

    #[test]
    fn responses_read_flat_tools_and_text_format() {
        let request = json!({"input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}},
                                                    {"type": "web_search"}],
                             "tool_choice": {"type": "function", "name": "f"}});
        assert!(
            matches!(responses(&request, 0).unwrap().shape, Shape::Call { name, .. } if name == "f")
        );
        let request = json!({"input": "x", "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "integer"}}}});
        assert_eq!(
            responses(&request, 0).unwrap().shape,
            Shape::Json(json!({"type": "integer"}))
        );
        let request = json!({"input": "x", "tools": [{"type": "function"}]});
        assert_eq!(
            responses(&request, 0).unwrap_err().param.as_deref(),
            Some("tools[0].name")
        );
        let request = json!({"input": "x", "text": {"format": {"type": "yaml"}}});
        assert_eq!(
            responses(&request, 0).unwrap_err().param.as_deref(),
            Some("text.format.type")
        );
    }
}
