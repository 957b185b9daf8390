//! An Anthropic stream's events written as chat completion chunks: a role
//! chunk at `message_start`, a content chunk per `text_delta`, a tool call
//! per `tool_use` block (its arguments from `input_json_delta`), the finish
//! reason at `message_delta`, then the usage chunk when the client asked
//! for it, and `[DONE]` at `message_stop`. An `error` event becomes an
//! OpenAI error chunk and ends the stream.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::response::{chat_usage, completion_id, finish_reason};

/// One stream's translation state.
pub struct ChunkTranslator {
    id: String,
    model: Value,
    created: u64,
    include_usage: bool,
    /// Usage from `message_start`, updated by each `message_delta`.
    usage: Value,
    /// Content block index to tool call index.
    tools: HashMap<u64, u64>,
    closed: bool,
}

impl ChunkTranslator {
    pub fn new(created: u64, include_usage: bool) -> Self {
        Self {
            id: completion_id(None),
            model: Value::Null,
            created,
            include_usage,
            usage: json!({}),
            tools: HashMap::new(),
            closed: false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn write(&self, out: &mut Vec<u8>, choices: Value, usage: Option<Value>) {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn delta(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let choice =
            json!([{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]);
        self.write(out, choice, None);
    }

    /// Translates one event's `data` into `out`.
    pub fn event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return self.fail("The provider sent a stream event that is not JSON.", out);
        };
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let message = event.get("message").unwrap_or(&Value::Null);
                self.id = completion_id(message.get("id").and_then(Value::as_str));
                self.model = message.get("model").cloned().unwrap_or(Value::Null);
                self.merge_usage(message.get("usage"));
                self.delta(out, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => self.block_start(&event, out),
            Some("content_block_delta") => self.block_delta(&event, out),
            Some("message_delta") => {
                self.merge_usage(event.get("usage"));
                let stop = event.get("delta").and_then(|d| d.get("stop_reason"));
                if let Some(stop) = stop.and_then(Value::as_str) {
                    self.delta(out, json!({}), Some(finish_reason(stop)));
                }
            }
            Some("message_stop") => self.end(out),
            Some("error") => {
                let message = event.get("error").and_then(|e| e.get("message"));
                let message = message
                    .and_then(Value::as_str)
                    .unwrap_or("The provider failed.");
                self.fail(message, out);
            }
            // `ping`, `content_block_stop` and event types added later.
            _ => {}
        }
    }

    fn block_start(&mut self, event: &Value, out: &mut Vec<u8>) {
        let block = event.get("content_block").unwrap_or(&Value::Null);
        if block.get("type").and_then(Value::as_str) != Some("tool_use") {
            return;
        }
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        let call = self.tools.len() as u64;
        self.tools.insert(index, call);
        let delta = json!({"tool_calls": [{
            "index": call, "id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }]});
        self.delta(out, delta, None);
    }

    fn block_delta(&self, event: &Value, out: &mut Vec<u8>) {
        let delta = event.get("delta").unwrap_or(&Value::Null);
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let text = delta.get("text").cloned().unwrap_or_default();
                self.delta(out, json!({"content": text}), None);
            }
            Some("input_json_delta") => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(call) = self.tools.get(&index) else {
                    return;
                };
                let partial = delta.get("partial_json").cloned().unwrap_or_default();
                let delta =
                    json!({"tool_calls": [{"index": call, "function": {"arguments": partial}}]});
                self.delta(out, delta, None);
            }
            // Thinking and signatures: never asked for, never shown.
            _ => {}
        }
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        let Some(Value::Object(fields)) = usage else {
            return;
        };
        for (field, value) in fields {
            if !value.is_null() {
                self.usage[field] = value.clone();
            }
        }
    }

    /// `message_stop`: the usage chunk if asked for, then `[DONE]`.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.include_usage {
            self.write(out, json!([]), Some(chat_usage(&self.usage)));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.closed = true;
    }

    /// Ends the stream with an OpenAI error chunk.
    pub fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let error = json!({"error": {"message": message, "type": "server_error", "param": null,
                                      "code": "provider_stream_error"}});
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(error.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        self.closed = true;
    }

    /// The provider's stream ended: unless `message_stop` came, it was cut.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.fail("The provider's stream ended before its message did.", out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.strip_prefix("data: ").unwrap().to_owned())
            .collect()
    }

    #[test]
    fn text_and_a_tool_call_become_chunks_with_usage() {
        let mut stream = ChunkTranslator::new(1, true);
        let mut out = Vec::new();
        for event in [
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                   "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
            json!({"type": "message_stop"}),
        ] {
            stream.event(event.to_string().as_bytes(), &mut out);
        }
        let chunks = chunks(&out);
        assert_eq!(chunks.last().unwrap(), "[DONE]");
        let parsed: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| serde_json::from_str(c).unwrap())
            .collect();
        assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(parsed[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            parsed[2]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "t1"
        );
        assert_eq!(
            parsed[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(parsed[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(parsed[5]["usage"]["prompt_tokens"], 10);
        assert_eq!(parsed[5]["usage"]["completion_tokens"], 7);
        assert!(parsed.iter().all(|c| c["id"] == "chatcmpl-1"));
    }

    #[test]
    fn an_error_event_or_a_cut_ends_with_an_error_chunk() {
        let mut stream = ChunkTranslator::new(1, false);
        let mut out = Vec::new();
        stream.event(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            &mut out,
        );
        stream.event(br#"{"type":"message_stop"}"#, &mut out);
        let chunks = chunks(&out);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].contains("Overloaded"));
        let mut cut = ChunkTranslator::new(1, false);
        let mut out = Vec::new();
        cut.finish(&mut out);
        assert!(String::from_utf8_lossy(&out).contains("provider_stream_error"));
    }
}
