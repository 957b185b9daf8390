//! Level 3's answers: the first `[[static_responses]]` entry matching the
//! call, as a chat completion or a Responses object (or their streams),
//! marked and never billed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, header};
use serde_json::{Value, json};

use crate::config::StaticResponse;
use crate::vocab::DEGRADED;
use crate::vocab::Endpoint;
use crate::vocab::ServedBy;

mod responses;

/// What a static answer is matched against and shaped by.
pub struct Asked<'a> {
    pub endpoint: Endpoint,
    pub body: Option<&'a serde_json::Map<String, Value>>,
    /// The model the call resolved to, and the one the client named.
    pub model: &'a Arc<str>,
    pub requested: &'a str,
    pub stream: bool,
    pub include_usage: bool,
}

/// The matching entry's answer, or `None` (another endpoint, no match).
pub fn answer(
    statics: &[StaticResponse],
    api: &Asked<'_>,
    retry_after: Duration,
) -> Option<Response> {
    let body = api.body?;
    let said = match api.endpoint {
        Endpoint::ChatCompletions => last_user_text(body.get("messages")),
        Endpoint::Responses => match body.get("input") {
            Some(Value::String(text)) => text.clone(),
            input => last_user_text(input),
        },
        _ => return None,
    }
    .to_lowercase();
    let model = &**api.model;
    let chosen = statics.iter().find(|entry| {
        let model_fits = entry.models.is_empty()
            || entry
                .models
                .iter()
                .any(|name| name == model || name == api.requested);
        let words_fit = entry.keywords.is_empty()
            || entry
                .keywords
                .iter()
                .any(|word| said.contains(&word.to_lowercase()));
        model_fits && words_fit
    })?;
    let text = chosen
        .content
        .replace("{model}", model)
        .replace("{retry_after}", &retry_after.as_secs().to_string());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let id = format!("{:016x}", fastrand::u64(..));
    let mut response = match (api.endpoint, api.stream) {
        (Endpoint::Responses, false) => {
            json_response(responses::whole(&id, created, model, &text).to_string())
        }
        (Endpoint::Responses, true) => {
            sse_response(responses::streamed(&id, created, model, &text))
        }
        (_, false) => whole(&id, created, model, &text),
        (_, true) => streamed(&id, created, model, &text, api.include_usage),
    };
    response
        .headers_mut()
        .insert(DEGRADED, HeaderValue::from_static("static"));
    response.extensions_mut().insert(ServedBy {
        model: api.model.clone(),
        deployment: "static".into(),
    });
    Some(response)
}

/// The text of the last user message (string content or text parts) of
/// chat `messages` or a Responses `input` list.
fn last_user_text(messages: Option<&Value>) -> String {
    let Some(message) = messages.and_then(Value::as_array).and_then(|messages| {
        messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }) else {
        return String::new();
    };
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn usage() -> Value {
    json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
}

fn whole(id: &str, created: u64, model: &str, text: &str) -> Response {
    let body = json!({
        "id": format!("chatcmpl-static-{id}"), "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"}],
        "usage": usage(),
    });
    json_response(body.to_string())
}

fn json_response(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn streamed(id: &str, created: u64, model: &str, text: &str, include_usage: bool) -> Response {
    let id = format!("chatcmpl-static-{id}");
    let chunk = |choices: Value, usage: Value| {
        let mut chunk = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "choices": choices});
        if include_usage {
            chunk["usage"] = usage;
        }
        format!("data: {chunk}\n\n")
    };
    let mut body = chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null}]),
        Value::Null,
    );
    body.push_str(&chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        Value::Null,
    ));
    if include_usage {
        body.push_str(&chunk(json!([]), usage()));
    }
    body.push_str("data: [DONE]\n\n");
    sse_response(body)
}

fn sse_response(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
