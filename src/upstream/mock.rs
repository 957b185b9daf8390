//! `provider = "mock"`: a simulated OpenAI upstream inside the process, so a
//! fresh checkout answers real SDK calls without a provider account.
//! Deterministic: the same request body always yields the same text.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{Endpoint, UpstreamError, UpstreamResponse};
use crate::config::MockConfig;

const WORDS: &[&str] = &[
    "the",
    "gateway",
    "routes",
    "each",
    "request",
    "to",
    "a",
    "healthy",
    "deployment",
    "and",
    "streams",
    "tokens",
    "back",
    "while",
    "limits",
    "keep",
    "every",
    "team",
    "inside",
    "its",
    "quota",
    "so",
    "answers",
    "arrive",
    "quickly",
    "with",
    "no",
    "surprises",
    "for",
    "users",
];

const EMBEDDING_DIMENSIONS: usize = 1536;

pub struct MockUpstream {
    latency: Duration,
    chunks: usize,
    chunk_interval: Duration,
}

struct Answer {
    id: String,
    created: u64,
    model: String,
    pieces: Vec<String>,
    prompt_tokens: u64,
}

impl Answer {
    fn text(&self) -> String {
        self.pieces.concat()
    }

    fn completion_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }

    fn chat_usage(&self) -> Value {
        let (prompt, completion) = (self.prompt_tokens, self.completion_tokens());
        json!({
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}
        })
    }

    fn responses_usage(&self) -> Value {
        let (input, output) = (self.prompt_tokens, self.completion_tokens());
        json!({
            "input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}
        })
    }
}

impl MockUpstream {
    pub fn new(config: &MockConfig) -> Self {
        Self {
            latency: config.latency,
            chunks: config.chunks.max(1),
            chunk_interval: config.chunk_interval,
        }
    }

    pub async fn respond(&self, endpoint: Endpoint, model: &str, body: &[u8]) -> UpstreamResponse {
        tokio::time::sleep(self.latency).await;
        let mut request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let stream = request["stream"].as_bool().unwrap_or(false);
        let include_usage = request["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
        if let Value::Object(fields) = &mut request {
            // Streamed or not, the same question gets the same answer.
            fields.remove("stream");
            fields.remove("stream_options");
        }
        let answer = self.answer(model, &request, body.len());
        match (endpoint, stream) {
            (Endpoint::Embeddings, _) => json_response(embeddings(model, &request)),
            (Endpoint::ChatCompletions, false) => json_response(chat(&answer)),
            (Endpoint::Completions, false) => json_response(completion(&answer)),
            (Endpoint::Responses, false) => json_response(response_object(&answer, "completed")),
            (Endpoint::ChatCompletions, true) => self.sse(chat_events(&answer, include_usage)),
            (Endpoint::Completions, true) => self.sse(completion_events(&answer, include_usage)),
            (Endpoint::Responses, true) => self.sse(responses_events(&answer)),
            (other, _) => super::mock_media::respond(other, model, body),
        }
    }

    fn answer(&self, model: &str, request: &Value, body_len: usize) -> Answer {
        let mut hasher = DefaultHasher::new();
        request.to_string().hash(&mut hasher);
        let seed = hasher.finish();
        let mut rng = fastrand::Rng::with_seed(seed);
        let pieces = (0..self.chunks)
            .map(|i| {
                let word = WORDS[rng.usize(..WORDS.len())];
                if i == 0 {
                    capitalise(word)
                } else {
                    format!(" {word}")
                }
            })
            .collect();
        Answer {
            id: format!("{seed:016x}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: model.to_owned(),
            pieces,
            // About four bytes per token, as a rough plausible count.
            prompt_tokens: (body_len as u64 / 4).max(1),
        }
    }

    fn sse(&self, events: Vec<Bytes>) -> UpstreamResponse {
        let interval = self.chunk_interval;
        let body = futures_util::stream::iter(events.into_iter().enumerate())
            .then(move |(index, event)| async move {
                if index > 0 {
                    tokio::time::sleep(interval).await;
                }
                Ok::<Bytes, UpstreamError>(event)
            })
            .boxed();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        UpstreamResponse {
            status: StatusCode::OK,
            headers,
            body,
        }
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn json_response(value: Value) -> UpstreamResponse {
    let bytes = Bytes::from(value.to_string());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    UpstreamResponse {
        status: StatusCode::OK,
        headers,
        body: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
    }
}

fn data_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn named_event(value: &Value) -> Bytes {
    Bytes::from(format!(
        "event: {}\ndata: {value}\n\n",
        value["type"].as_str().unwrap_or("")
    ))
}

fn chat(answer: &Answer) -> Value {
    json!({
        "id": format!("chatcmpl-{}", answer.id), "object": "chat.completion",
        "created": answer.created, "model": answer.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text(), "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": answer.chat_usage(), "system_fingerprint": "fp_sluice_mock"
    })
}

fn chat_events(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    let usage_field = if include_usage {
        Some(Value::Null)
    } else {
        None
    };
    let chunk = |delta: Value, finish: Value| {
        let mut value = json!({
            "id": format!("chatcmpl-{}", answer.id), "object": "chat.completion.chunk",
            "created": answer.created, "model": answer.model, "system_fingerprint": "fp_sluice_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if let Some(usage) = &usage_field {
            value["usage"] = usage.clone();
        }
        data_event(&value)
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        answer
            .pieces
            .iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(data_event(&json!({
            "id": format!("chatcmpl-{}", answer.id), "object": "chat.completion.chunk",
            "created": answer.created, "model": answer.model, "system_fingerprint": "fp_sluice_mock",
            "choices": [], "usage": answer.chat_usage()
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn completion(answer: &Answer) -> Value {
    json!({
        "id": format!("cmpl-{}", answer.id), "object": "text_completion",
        "created": answer.created, "model": answer.model,
        "choices": [{"index": 0, "text": answer.text(), "logprobs": null, "finish_reason": "stop"}],
        "usage": answer.chat_usage()
    })
}

fn completion_events(answer: &Answer, include_usage: bool) -> Vec<Bytes> {
    let chunk = |text: &str, finish: Value| {
        data_event(&json!({
            "id": format!("cmpl-{}", answer.id), "object": "text_completion",
            "created": answer.created, "model": answer.model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]
        }))
    };
    let mut events: Vec<Bytes> = answer
        .pieces
        .iter()
        .map(|p| chunk(p, Value::Null))
        .collect();
    events.push(chunk("", json!("stop")));
    if include_usage {
        events.push(data_event(&json!({
            "id": format!("cmpl-{}", answer.id), "object": "text_completion",
            "created": answer.created, "model": answer.model, "choices": [],
            "usage": answer.chat_usage()
        })));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn response_object(answer: &Answer, status: &str) -> Value {
    let done = status == "completed";
    json!({
        "id": format!("resp_{}", answer.id), "object": "response", "created_at": answer.created,
        "status": status, "model": answer.model,
        "output": if done { json!([{
            "type": "message", "id": format!("msg_{}", answer.id), "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": answer.text(), "annotations": []}]
        }]) } else { json!([]) },
        "usage": if done { answer.responses_usage() } else { Value::Null }
    })
}

fn responses_events(answer: &Answer) -> Vec<Bytes> {
    let item_id = format!("msg_{}", answer.id);
    let text = answer.text();
    let part_done = json!({"type": "output_text", "text": text, "annotations": []});
    let item_done = json!({"type": "message", "id": item_id, "status": "completed",
                           "role": "assistant", "content": [part_done]});
    let mut bodies = vec![
        json!({"type": "response.created", "response": response_object(answer, "in_progress")}),
        json!({"type": "response.in_progress", "response": response_object(answer, "in_progress")}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}),
    ];
    bodies.extend(answer.pieces.iter().map(|piece| {
        json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
               "content_index": 0, "delta": piece})
    }));
    bodies.push(
        json!({"type": "response.output_text.done", "item_id": item_id, "output_index": 0,
                       "content_index": 0, "text": text}),
    );
    bodies.push(
        json!({"type": "response.content_part.done", "item_id": item_id, "output_index": 0,
                       "content_index": 0, "part": part_done}),
    );
    bodies.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item_done}));
    bodies.push(
        json!({"type": "response.completed", "response": response_object(answer, "completed")}),
    );
    bodies
        .into_iter()
        .enumerate()
        .map(|(sequence, mut body)| {
            body["sequence_number"] = json!(sequence);
            named_event(&body)
        })
        .collect()
}

/// Bag-of-words vectors: texts sharing words point in similar directions,
/// which makes the mock usable for trying semantic caching.
fn embeddings(model: &str, request: &Value) -> Value {
    let dimensions = request["dimensions"]
        .as_u64()
        .map_or(EMBEDDING_DIMENSIONS, |d| d.clamp(1, 4096) as usize);
    let inputs: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().map(|item| item.to_string()).collect(),
        other => vec![other.to_string()],
    };
    let mut prompt_tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            prompt_tokens += text.split_whitespace().count().max(1) as u64;
            json!({"object": "embedding", "index": index, "embedding": embed(text, dimensions)})
        })
        .collect();
    json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    })
}

fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimensions];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut hasher = DefaultHasher::new();
        word.to_lowercase().hash(&mut hasher);
        let hash = hasher.finish();
        let sign = if hash & 1 == 0 { 1.0 } else { -1.0 };
        vector[(hash >> 1) as usize % dimensions] += sign;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}
