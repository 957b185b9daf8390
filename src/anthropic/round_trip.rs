//! A property of the two translations together: a generated Messages
//! request in the part of the API a chat completion can say (system,
//! text, images, custom tools, tool use and results, tool choice, stop
//! sequences, sampling), translated to a chat completion (the Messages
//! adapter's way) and back to Messages (an Anthropic deployment's way),
//! is the request it was, once both are written in one normal form
//! (string content as one text block, a system prompt as one string).

use serde_json::{Map, Value, json};

use super::provider::to_messages;
use super::to_chat;

fn text(rng: &mut fastrand::Rng) -> String {
    const WORDS: [&str; 8] = [
        "tea",
        "Größe",
        "\"quoted\"",
        "line\nbreak",
        "{}",
        "🙂",
        "a b",
        "x",
    ];
    (0..rng.usize(1..4))
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn text_block(rng: &mut fastrand::Rng) -> Value {
    json!({"type": "text", "text": text(rng)})
}

fn image(rng: &mut fastrand::Rng) -> Value {
    match rng.bool() {
        true => {
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        }
        false => {
            json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
        }
    }
}

/// A user turn: the results of the last turn's tool calls first, then
/// text and images (at least one block).
fn user_turn(rng: &mut fastrand::Rng, calls: &[String]) -> Value {
    let mut blocks: Vec<Value> = calls
        .iter()
        .map(|id| json!({"type": "tool_result", "tool_use_id": id, "content": [text_block(rng)]}))
        .collect();
    for _ in 0..rng.usize(usize::from(calls.is_empty())..3) {
        blocks.push(match rng.u8(..4) {
            0 => image(rng),
            _ => text_block(rng),
        });
    }
    json!({"role": "user", "content": blocks})
}

/// An assistant turn: text, tool calls, or both; the calls' ids.
fn assistant_turn(rng: &mut fastrand::Rng, tools: &[String], turn: usize) -> (Value, Vec<String>) {
    let mut blocks = Vec::new();
    let with_text = tools.is_empty() || rng.bool();
    if with_text {
        blocks.push(text_block(rng));
    }
    let mut calls = Vec::new();
    let most = if tools.is_empty() { 0 } else { 3 };
    for call in 0..rng.usize(usize::from(!with_text)..most.max(1)) {
        let id = format!("toolu_{turn}_{call}");
        let name = &tools[rng.usize(..tools.len())];
        let input = json!({"city": text(rng), "days": rng.u8(..9)});
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        calls.push(id);
    }
    (json!({"role": "assistant", "content": blocks}), calls)
}

fn request(rng: &mut fastrand::Rng) -> Value {
    let tools: Vec<String> = (0..rng.usize(0..3)).map(|i| format!("tool_{i}")).collect();
    let mut request = json!({"model": "m", "max_tokens": rng.u32(1..9000)});
    if rng.bool() {
        request["system"] = text(rng).into();
    }
    if !tools.is_empty() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        request["tools"] = tools
            .iter()
            .map(|name| json!({"name": name, "description": text(rng), "input_schema": schema}))
            .collect();
        request["tool_choice"] = match rng.u8(..4) {
            0 => json!({"type": "auto"}),
            1 => json!({"type": "any"}),
            2 => json!({"type": "tool", "name": tools[0]}),
            _ => json!({"type": "none"}),
        };
    }
    if rng.bool() {
        request["temperature"] = json!(f64::from(rng.u8(..11)) / 10.0);
    }
    if rng.bool() {
        let stops: Vec<String> = (0..rng.usize(1..5)).map(|_| text(rng)).collect();
        request["stop_sequences"] = json!(stops);
    }
    let mut turns = vec![user_turn(rng, &[])];
    for turn in 0..rng.usize(0..3) {
        let (assistant, calls) = assistant_turn(rng, &tools, turn);
        turns.push(assistant);
        turns.push(user_turn(rng, &calls));
    }
    request["messages"] = turns.into();
    request
}

/// String content as one text block; a system prompt as one string; tool
/// results' content as blocks.
fn normal(mut request: Value) -> Value {
    if let Some(Value::Array(blocks)) = request.get("system") {
        let joined: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        request["system"] = joined.join("\n").into();
    }
    if let Some(Value::Array(turns)) = request.get_mut("messages") {
        for turn in turns {
            blocks_of(&mut turn["content"]);
            if let Some(Value::Array(blocks)) = turn.get_mut("content") {
                for block in blocks.iter_mut().filter(|b| b["type"] == "tool_result") {
                    blocks_of(&mut block["content"]);
                    if let Some(object) = block.as_object_mut() {
                        object.remove("is_error");
                    }
                }
            }
        }
    }
    request
}

fn blocks_of(content: &mut Value) {
    if let Value::String(text) = content {
        *content = json!([{"type": "text", "text": text}]);
    }
}

#[test]
fn a_request_translated_to_chat_and_back_is_the_same_request() {
    let mut rng = fastrand::Rng::with_seed(2026);
    for case in 0..500 {
        let asked = request(&mut rng);
        let chat = to_chat(asked.to_string().as_bytes())
            .unwrap_or_else(|refused| panic!("case {case}: {refused}\n{asked:#}"));
        let chat = serde_json::to_vec(&Value::Object(chat.body)).unwrap();
        let (back, _) =
            to_messages(&chat, "m").unwrap_or_else(|refused| panic!("case {case}: {refused}"));
        let mut back: Map<String, Value> = serde_json::from_value(back).unwrap();
        back.remove("stream");
        assert_eq!(
            normal(Value::Object(back)),
            normal(asked.clone()),
            "case {case}: the chat body was {}",
            String::from_utf8_lossy(&chat)
        );
    }
}
