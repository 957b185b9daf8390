//! A JSON schema written into the prompt, as frameworks that ask for
//! structured output in JSON mode write it (instructor's `JSON` mode,
//! LlamaIndex's text completion programs): the mock answers with an object
//! that satisfies it, where a real model would.

use serde_json::Value;

/// Text scanned in each message; a schema past it is not looked for.
const SCAN_BYTES: usize = 64 * 1024;
/// Opening braces tried per message.
const MAX_TRIES: usize = 256;

/// The first JSON schema in the conversation's text (chat `messages`, or
/// a Responses `input`, `instructions` included by the caller).
pub fn schema_in(conversation: &Value) -> Option<Value> {
    let mut texts = Vec::new();
    collect_text(conversation, &mut texts);
    texts.into_iter().find_map(schema_in_text)
}

fn collect_text<'a>(value: &'a Value, texts: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => texts.push(text),
        Value::Array(items) => items.iter().for_each(|item| collect_text(item, texts)),
        Value::Object(fields) => {
            for name in ["content", "text", "input", "instructions"] {
                if let Some(inner) = fields.get(name) {
                    collect_text(inner, texts);
                }
            }
        }
        _ => {}
    }
}

fn schema_in_text(text: &str) -> Option<Value> {
    let end = text
        .char_indices()
        .map(|(at, _)| at)
        .take_while(|at| *at <= SCAN_BYTES)
        .last()
        .unwrap_or(0);
    let scanned = if text.len() <= SCAN_BYTES {
        text
    } else {
        &text[..end]
    };
    scanned
        .match_indices('{')
        .take(MAX_TRIES)
        .find_map(|(at, _)| {
            let value = serde_json::Deserializer::from_str(&scanned[at..])
                .into_iter::<Value>()
                .next()?
                .ok()?;
            looks_like_a_schema(&value).then_some(value)
        })
}

/// An object schema (`properties`), or one of alternatives or references.
fn looks_like_a_schema(value: &Value) -> bool {
    let Value::Object(fields) = value else {
        return false;
    };
    fields.get("properties").is_some_and(Value::is_object)
        || (fields.contains_key("$defs") && fields.contains_key("$ref"))
        || ["anyOf", "oneOf"]
            .iter()
            .any(|key| fields.get(*key).is_some_and(Value::is_array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instructors_json_mode_prompt_gives_its_schema() {
        let schema = json!({"properties": {"name": {"title": "Name", "type": "string"}, "age": {"type": "integer"}},
                            "required": ["name", "age"], "title": "User", "type": "object"});
        let prompt = format!(
            "As a genius expert, your task is to understand the content and provide the parsed objects in json that match the following json_schema:\n\n{}\n\nMake sure to return an instance of the JSON, not the schema itself",
            serde_json::to_string_pretty(&schema).unwrap()
        );
        let messages = json!([{"role": "system", "content": prompt}, {"role": "user", "content": [{"type": "text", "text": "Jason is 25"}]}]);
        assert_eq!(schema_in(&messages), Some(schema));
    }

    #[test]
    fn braces_that_are_not_a_schema_are_passed_over() {
        let messages =
            json!([{"role": "user", "content": "Reply in json like {\"a\": 1} or {not json"}]);
        assert_eq!(schema_in(&messages), None);
        let fenced = json!([{"role": "user", "content": "Use this JSON schema:\n```json\n{\"type\": \"object\", \"properties\": {\"x\": {\"type\": \"number\"}}}\n```"}]);
        assert!(schema_in(&fenced).is_some());
    }
}
