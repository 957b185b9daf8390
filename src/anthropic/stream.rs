//! A chat completion stream's chunks written as Messages stream events:
//! `message_start` and a `ping` at the first chunk, a content block per run
//! of text or per tool call (`content_block_start`, `content_block_delta`
//! with `text_delta` or `input_json_delta`, `content_block_stop`), then
//! `message_delta` with the stop reason and usage, and `message_stop`.
//! A stream that fails or ends early ends with an `error` event instead.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::response::{message_id, stop_reason, usage};

/// The block being written: text, or the tool call of a chunk `index`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool(u64),
}

/// One stream's translation state. Feed it each chunk's JSON, then `end`.
#[derive(Default)]
pub struct StreamTranslator {
    started: bool,
    /// The message id, for tool call ids an upstream leaves out.
    message_id: String,
    open: Option<Block>,
    /// The index the next content block gets.
    next_index: usize,
    /// Each tool call's block, by the chunk's tool call `index`: one block
    /// per call however its deltas are spelled or interleaved.
    tools: HashMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Value>,
    /// An `error` or `message_stop` event was written: nothing follows.
    closed: bool,
}

/// Appends one SSE event, named by its `type`.
fn write(out: &mut Vec<u8>, kind: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl StreamTranslator {
    /// Whether the stream ended, well or not.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Translates one chunk (an event's `data`) into `out`.
    pub fn chunk(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
            return self.fail("The upstream sent a stream event that is not JSON.", out);
        };
        if let Some(error) = chunk.get("error") {
            let message = error.get("message").and_then(Value::as_str);
            let message = message.unwrap_or("The upstream failed mid-stream.");
            return self.fail_as(error_kind(error), message, out);
        }
        if !self.started {
            self.start(&chunk, out);
        }
        if let Some(found) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(found.clone());
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(delta) = choice.get("delta") {
            self.delta(delta, out);
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(finish.to_owned());
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        self.started = true;
        self.message_id = message_id(chunk.get("id").and_then(Value::as_str));
        let message = json!({
            "id": self.message_id,
            "type": "message", "role": "assistant", "content": [],
            "model": chunk.get("model").cloned().unwrap_or(Value::Null),
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        write(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        write(out, "ping", &json!({"type": "ping"}));
    }

    fn delta(&mut self, delta: &Value, out: &mut Vec<u8>) {
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
            let delta = json!({"type": "text_delta", "text": text});
            self.write_delta(self.next_index - 1, delta, out);
        }
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        for call in calls.into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let function = call.get("function");
            let block = match self.tools.get(&index) {
                Some(block) => *block,
                None => self.open_tool(index, call, out),
            };
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str);
            if let Some(partial) = arguments.filter(|a| !a.is_empty()) {
                // A late fragment of a call whose block was closed still
                // names that block: clients add it there.
                let delta = json!({"type": "input_json_delta", "partial_json": partial});
                self.write_delta(block, delta, out);
            }
        }
    }

    /// Starts the block of tool call `index`: its id (one the upstream
    /// left out is made from the message's) and name.
    fn open_tool(&mut self, index: u64, call: &Value, out: &mut Vec<u8>) -> usize {
        let text = |value: Option<&Value>| {
            value
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        };
        let id = text(call.get("id")).unwrap_or_else(|| {
            let suffix = self.message_id.strip_prefix("msg_").unwrap_or_default();
            format!("toolu_{index}_{suffix}")
        });
        let name = text(call.get("function").and_then(|f| f.get("name"))).unwrap_or_default();
        let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
        self.open_block(Block::Tool(index), block, out);
        let at = self.next_index - 1;
        self.tools.insert(index, at);
        at
    }

    /// Opens a block of `kind` unless it is the one open.
    fn open_block(&mut self, kind: Block, block: Value, out: &mut Vec<u8>) {
        if self.open == Some(kind) {
            return;
        }
        self.close_block(out);
        let event = json!({
            "type": "content_block_start", "index": self.next_index, "content_block": block,
        });
        write(out, "content_block_start", &event);
        self.open = Some(kind);
        self.next_index += 1;
    }

    fn write_delta(&self, index: usize, delta: Value, out: &mut Vec<u8>) {
        let event = json!({"type": "content_block_delta", "index": index, "delta": delta});
        write(out, "content_block_delta", &event);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            let event = json!({"type": "content_block_stop", "index": self.next_index - 1});
            write(out, "content_block_stop", &event);
        }
    }

    /// The upstream's stream ended (`[DONE]`, or its last byte): the
    /// message ends, or an error says it was cut short.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let Some(finish) = self.finish.take() else {
            return self.fail("The upstream's stream ended before its answer did.", out);
        };
        self.close_block(out);
        // Some upstreams say `stop` after tool calls: the client must run them.
        let stop = match stop_reason(&finish) {
            "end_turn" if !self.tools.is_empty() => "tool_use",
            stop => stop,
        };
        let event = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": usage(self.usage.as_ref()),
        });
        write(out, "message_delta", &event);
        write(out, "message_stop", &json!({"type": "message_stop"}));
        self.closed = true;
    }

    /// Ends the stream with an `api_error` event.
    pub fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.fail_as("api_error", message, out);
    }

    fn fail_as(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let event = json!({"type": "error", "error": {"type": kind, "message": message}});
        write(out, "error", &event);
        self.closed = true;
    }
}

/// Anthropic's error type for an OpenAI error met mid-stream: clients
/// retry `rate_limit_error` and `overloaded_error`, not `api_error`.
fn error_kind(error: &Value) -> &'static str {
    let said = |field: &str| error.get(field).and_then(Value::as_str).unwrap_or_default();
    let (kind, code) = (said("type"), said("code"));
    if kind.contains("rate_limit") || code.contains("rate_limit") {
        "rate_limit_error"
    } else if kind.contains("overloaded") || code.contains("overloaded") {
        "overloaded_error"
    } else {
        "api_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events' `type`s and data, in order.
    fn events(out: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|event| {
                let (name, data) = event.split_once("\ndata: ").unwrap();
                let data: Value = serde_json::from_str(data).unwrap();
                assert_eq!(name.strip_prefix("event: ").unwrap(), data["type"]);
                data
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
        json!({"id": "chatcmpl-1", "model": "gpt-4o",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn text_then_a_tool_call_then_usage() {
        let mut stream = StreamTranslator::default();
        let mut out = Vec::new();
        stream.chunk(
            &chunk(json!({"role": "assistant", "content": ""}), None),
            &mut out,
        );
        stream.chunk(&chunk(json!({"content": "Hel"}), None), &mut out);
        stream.chunk(&chunk(json!({"content": "lo"}), None), &mut out);
        let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": ""}}]});
        stream.chunk(&chunk(call, None), &mut out);
        let args = json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]});
        stream.chunk(&chunk(args, None), &mut out);
        stream.chunk(&chunk(json!({}), Some("tool_calls")), &mut out);
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}});
        stream.chunk(usage.to_string().as_bytes(), &mut out);
        stream.end(&mut out);
        let kinds: Vec<String> = events(&out)
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let all = events(&out);
        assert_eq!(all[6]["content_block"]["id"], "call_1");
        assert_eq!(all[6]["index"], 1);
        assert_eq!(all[7]["delta"]["partial_json"], "{\"city\":");
        assert_eq!(all[9]["delta"]["stop_reason"], "tool_use");
        assert_eq!(all[9]["usage"]["output_tokens"], 4);
        assert_eq!(all[9]["usage"]["input_tokens"], 9);
        assert!(stream.is_closed());
    }

    #[test]
    fn parallel_calls_keep_one_block_each_however_spelled() {
        let mut stream = StreamTranslator::default();
        let mut out = Vec::new();
        let call = |index: u64, id: Value, name: Value, args: &str| json!({"tool_calls": [{"index": index, "id": id, "function": {"name": name, "arguments": args}}]});
        stream.chunk(&chunk(call(0, json!("c0"), json!("a"), ""), None), &mut out);
        // `id: null` on a later delta, then calls interleaved: 1, 0.
        stream.chunk(
            &chunk(call(0, Value::Null, Value::Null, "{\"x\":"), None),
            &mut out,
        );
        stream.chunk(
            &chunk(call(1, Value::Null, json!("b"), "{}"), None),
            &mut out,
        );
        stream.chunk(
            &chunk(call(0, Value::Null, Value::Null, "1}"), None),
            &mut out,
        );
        stream.chunk(&chunk(json!({}), Some("stop")), &mut out);
        stream.end(&mut out);
        let all = events(&out);
        let starts: Vec<&Value> = all
            .iter()
            .filter(|e| e["type"] == "content_block_start")
            .collect();
        assert_eq!(starts.len(), 2, "{all:?}");
        assert_eq!(starts[0]["content_block"]["id"], "c0");
        assert_eq!(starts[1]["content_block"]["name"], "b");
        assert!(
            starts[1]["content_block"]["id"]
                .as_str()
                .unwrap()
                .starts_with("toolu_1_")
        );
        let first: String = all
            .iter()
            .filter(|e| e["type"] == "content_block_delta" && e["index"] == 0)
            .map(|e| e["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(first, "{\"x\":1}");
        let delta = all.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn a_failure_keeps_its_kind_for_clients_that_retry() {
        let mut out = Vec::new();
        let mut stream = StreamTranslator::default();
        stream.chunk(
            br#"{"error":{"message":"slow","type":"requests","code":"rate_limit_exceeded"}}"#,
            &mut out,
        );
        assert_eq!(events(&out)[0]["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn a_stream_cut_short_or_failing_ends_with_an_error_event() {
        let mut out = Vec::new();
        let mut cut = StreamTranslator::default();
        cut.chunk(&chunk(json!({"content": "Hi"}), None), &mut out);
        cut.end(&mut out);
        assert_eq!(events(&out).last().unwrap()["type"], "error");

        let mut out = Vec::new();
        let mut failed = StreamTranslator::default();
        failed.chunk(br#"{"error":{"message":"upstream broke"}}"#, &mut out);
        failed.chunk(&chunk(json!({"content": "late"}), None), &mut out);
        let all = events(&out);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0]["error"]["message"], "upstream broke");
    }
}
