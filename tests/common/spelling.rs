//! Legal re-spellings of an SSE stream, for tests: the same events written
//! the ways real OpenAI-compatible servers write them (line ends, `data:`
//! with or without its space, JSON whitespace, split `data:` lines,
//! comments), random streams to spell, random cuts, and a small reference
//! parser that reads any of them back into events to compare.
//!
//! Shared by the fake upstream and by the library's own property tests
//! (which include this file by path), so it uses only std, `serde_json` and
//! `fastrand`.

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEnd {
    Lf,
    CrLf,
    Cr,
}

impl LineEnd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Lf => "\n",
            Self::CrLf => "\r\n",
            Self::Cr => "\r",
        }
    }
}

/// How to write a stream. `Spelling::default()` is what OpenAI itself sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spelling {
    pub line_end: LineEnd,
    /// `data:{...}` rather than `data: {...}`.
    pub tight_data: bool,
    /// JSON with a space after every `:` and `,`, as Python's `json.dumps`.
    pub spaced_json: bool,
    /// A new `data:` line after every top-level-or-nested `,` of the JSON.
    pub split_data: bool,
    /// A comment line in every event and a comment-only event between events.
    pub comments: bool,
}

impl Default for Spelling {
    fn default() -> Self {
        Self {
            line_end: LineEnd::Lf,
            tight_data: false,
            spaced_json: false,
            split_data: false,
            comments: false,
        }
    }
}

impl Spelling {
    /// Python's `json.dumps`: `"usage": null`.
    pub fn spaced() -> Self {
        Self {
            spaced_json: true,
            ..Self::default()
        }
    }

    pub fn random(rng: &mut fastrand::Rng) -> Self {
        Self {
            line_end: [LineEnd::Lf, LineEnd::CrLf, LineEnd::Cr][rng.usize(0..3)],
            tight_data: rng.bool(),
            spaced_json: rng.bool(),
            split_data: rng.bool(),
            comments: rng.bool(),
        }
    }

    /// Whether this spelling writes the events' bytes differently at all.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// `events` (each `field: value` lines ending in `\n\n`, as canonical
    /// OpenAI) in this spelling, one string per event.
    pub fn stream(&self, events: &[String]) -> Vec<String> {
        events.iter().map(|event| self.event(event)).collect()
    }

    fn event(&self, canonical: &str) -> String {
        let end = self.line_end.as_str();
        let mut out = String::new();
        if self.comments {
            out.push_str(": keep-alive");
            out.push_str(end);
            out.push_str(end);
            out.push_str(": in the event");
            out.push_str(end);
        }
        for line in canonical.lines().filter(|line| !line.is_empty()) {
            let (name, value) = line.split_once(": ").unwrap_or((line, ""));
            if name != "data" {
                out.push_str(&self.field(name, value));
                out.push_str(end);
                continue;
            }
            let value = match serde_json::from_str::<Value>(value) {
                Ok(_) if self.spaced_json => respace(value),
                _ => value.to_owned(),
            };
            let parts = match self.split_data {
                true => split_after_commas(&value),
                false => vec![value],
            };
            for part in parts {
                out.push_str(&self.field("data", &part));
                out.push_str(end);
            }
        }
        out.push_str(end);
        out
    }

    fn field(&self, name: &str, value: &str) -> String {
        match self.tight_data {
            true => format!("{name}:{value}"),
            false => format!("{name}: {value}"),
        }
    }
}

/// JSON text with a space after every `:` and `,` outside strings.
fn respace(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 5 / 4);
    walk(json, |c, in_string| {
        out.push(c);
        if !in_string && (c == ':' || c == ',') {
            out.push(' ');
        }
    });
    out
}

/// JSON text cut after every `,` outside strings (each part one `data:` line;
/// the `\n` joining them is JSON whitespace).
fn split_after_commas(json: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    walk(json, |c, in_string| {
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
        if !in_string && c == ',' {
            parts.push(String::new());
        }
    });
    parts
}

/// Calls `each` with every char of `json` and whether it is part of a
/// string (its quotes included).
fn walk(json: &str, mut each: impl FnMut(char, bool)) {
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        let was_in_string = in_string;
        if !in_string {
            in_string = c == '"';
        } else if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_string = false;
        }
        each(c, was_in_string || in_string);
    }
}

/// `bytes` cut at up to `max_cuts` random places (a cut may fall anywhere:
/// inside a UTF-8 character, between `\r` and `\n`).
pub fn cut(rng: &mut fastrand::Rng, bytes: &[u8], max_cuts: usize) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = (0..rng.usize(0..=max_cuts))
        .map(|_| rng.usize(0..=bytes.len()))
        .collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
}

/// Text with what makes streams hard: quotes, escapes, braces, a usage
/// lookalike, non-ASCII, a newline.
pub fn tricky_text(rng: &mut fastrand::Rng) -> String {
    const PIECES: [&str; 9] = [
        "Hi",
        " there",
        "\"quoted\"",
        "back\\slash",
        "{\"usage\": null}",
        "é中",
        "\n",
        ",\"usage\":{\"prompt_tokens\":99}",
        "data: x",
    ];
    (0..rng.usize(1..4))
        .map(|_| PIECES[rng.usize(0..PIECES.len())])
        .collect()
}

/// A canonical chat stream as OpenAI sends it with `include_usage`: every
/// chunk with `"usage":null`, then the usage-only chunk and `[DONE]`.
pub fn chat_stream(rng: &mut fastrand::Rng, prompt: u64, completion: u64) -> Vec<String> {
    // Written by hand, so `usage` lands anywhere among the members (first,
    // middle or last), as different servers order them.
    let chunk = |rng: &mut fastrand::Rng, choices: Value, usage: Value| {
        let mut members = vec![
            format!("\"id\":\"chatcmpl-s\""),
            format!("\"object\":\"chat.completion.chunk\""),
            "\"created\":1".to_owned(),
            format!("\"model\":\"gpt-4o\""),
            format!("\"choices\":{choices}"),
        ];
        let at = rng.usize(0..=members.len());
        members.insert(at, format!("\"usage\":{usage}"));
        format!("data: {{{}}}\n\n", members.join(","))
    };
    let mut events = vec![chunk(
        rng,
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        Value::Null,
    )];
    let contents: Vec<String> = (0..rng.usize(1..4)).map(|_| tricky_text(rng)).collect();
    for content in contents {
        let delta = json!({"content": content});
        events.push(chunk(
            rng,
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            Value::Null,
        ));
    }
    events.push(chunk(
        rng,
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        Value::Null,
    ));
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": 0}});
    events.push(chunk(rng, json!([]), usage));
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// A canonical Responses API stream; usage only on `response.completed`.
pub fn responses_stream(rng: &mut fastrand::Rng, input: u64, output: u64) -> Vec<String> {
    let event = |kind: &str, mut value: Value, sequence: usize| {
        value["type"] = json!(kind);
        value["sequence_number"] = json!(sequence);
        format!("event: {kind}\ndata: {value}\n\n")
    };
    let response = |status: &str, usage: Value| json!({"id": "resp_s", "object": "response", "status": status, "model": "gpt-4o", "usage": usage});
    let mut events = vec![event(
        "response.created",
        json!({"response": response("in_progress", Value::Null)}),
        0,
    )];
    for _ in 0..rng.usize(1..4) {
        let delta = json!({"item_id": "msg_s", "output_index": 0, "content_index": 0, "delta": tricky_text(rng)});
        events.push(event("response.output_text.delta", delta, events.len()));
    }
    let usage = json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
    events.push(event(
        "response.completed",
        json!({"response": response("completed", usage)}),
        events.len(),
    ));
    events
}

/// A parsed event: its type (empty for `message`) and its data, as JSON
/// when it is JSON.
pub type Parsed = (String, Value);

/// Reads a stream by the grammar, as a client does: an independent,
/// obviously simple reference for what the events are.
pub fn parse_stream(bytes: &[u8]) -> Vec<Parsed> {
    let text = String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut events = Vec::new();
    let (mut name, mut data): (String, Option<String>) = (String::new(), None);
    for line in text.split('\n') {
        if line.is_empty() {
            if let Some(data) = data.take() {
                let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                events.push((std::mem::take(&mut name), value));
            }
            name.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => name = value.to_owned(),
            _ => {}
        }
    }
    events
}

/// The events a client that did not ask for usage gets: no usage-only
/// chunk, no top-level `usage` member on the others.
pub fn without_usage(events: Vec<Parsed>) -> Vec<Parsed> {
    events
        .into_iter()
        .filter(|(_, data)| {
            let no_choices = data["choices"] == json!([]) || data["choices"].is_null();
            !(no_choices && data["usage"].is_object())
        })
        .map(|(name, mut data)| {
            if let Some(fields) = data.as_object_mut()
                && fields.get("usage") == Some(&Value::Null)
            {
                fields.remove("usage");
            }
            (name, data)
        })
        .collect()
}
