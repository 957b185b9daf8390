//! The mock provider's memory of the responses it created, so the stateful
//! Responses calls work against it as against one OpenAI account:
//! `previous_response_id`, `GET`/`DELETE /responses/{id}`, `input_items` and
//! `cancel`. Bounded in count and age; another mock deployment does not know
//! the ids, like another provider account.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::json_reply;
use super::objects::MockObjects;
use crate::upstream::UpstreamResponse;
use crate::util::text::clip;
use crate::vocab::StoredCall;
use crate::vocab::error::error_body;

/// Larger answers are passed on but not remembered.
const MAX_RECORDED: usize = 1024 * 1024;

#[derive(Clone)]
struct Stored {
    response: Arc<Value>,
    input_items: Arc<Value>,
}

#[derive(Clone)]
pub struct MockResponses {
    stored: moka::sync::Cache<String, Stored>,
}

impl Default for MockResponses {
    fn default() -> Self {
        Self {
            stored: super::account_cache(),
        }
    }
}

impl MockResponses {
    /// A 404 when the request continues a response this account never made.
    pub fn unknown_previous(&self, body: &[u8]) -> Option<UpstreamResponse> {
        let request: Value = serde_json::from_slice(body).ok()?;
        let previous = request.get("previous_response_id")?.as_str()?;
        (!self.stored.contains_key(previous)).then(|| {
            not_found(
                &format!("Previous response with id '{}' not found.", clip(previous)),
                Some("previous_response_id"),
            )
        })
    }

    /// Passes `response` on unchanged, remembering the response object it
    /// carries (whole, or in a stream's `response.completed` event), and
    /// adding its input and output to its conversation, if it has one.
    pub fn remember(
        &self,
        request: &[u8],
        response: UpstreamResponse,
        conversation: Option<(MockObjects, String)>,
    ) -> UpstreamResponse {
        let input_items = input_items(request);
        let input = serde_json::from_slice::<Value>(request)
            .map(|mut request| request["input"].take())
            .unwrap_or_default();
        let stored = self.stored.clone();
        on_end(response, move |answer| {
            let Some(response) = answer.and_then(final_response) else {
                return;
            };
            if let Some((objects, id)) = conversation {
                objects.append_to_conversation(&id, &input);
                objects.append_to_conversation(&id, &response["output"]);
            }
            if let Some(id) = response.get("id").and_then(Value::as_str) {
                let kept = Stored {
                    input_items: Arc::new(input_items),
                    response: Arc::new(response.clone()),
                };
                stored.insert(id.to_owned(), kept);
            }
        })
    }

    /// Answers a call on a stored response as OpenAI does.
    pub fn answer(&self, call: &StoredCall) -> UpstreamResponse {
        let below = call.path.strip_prefix("responses/").unwrap_or(&call.path);
        let (id, action) = below.split_once('/').unwrap_or((below, ""));
        let Some(stored) = self.stored.get(id) else {
            return not_found(&format!("Response with id '{}' not found.", clip(id)), None);
        };
        let ok = |value: &Value| json_reply(StatusCode::OK, Bytes::from(value.to_string()));
        match (&call.method, action) {
            (&Method::GET, "") => ok(&stored.response),
            (&Method::DELETE, "") => {
                self.stored.invalidate(id);
                ok(&json!({"id": id, "object": "response", "deleted": true}))
            }
            (&Method::GET, "input_items") => ok(&stored.input_items),
            (&Method::POST, "cancel") => json_reply(
                StatusCode::BAD_REQUEST,
                error_body(
                    "Only responses created with background=true can be cancelled.",
                    "invalid_request_error",
                    None,
                    None,
                ),
            ),
            _ => not_found("Invalid URL for a stored response.", None),
        }
    }
}

/// Passes `response` on unchanged and calls `done` with the whole answer
/// at its end (`None` past `MAX_RECORDED`).
pub fn on_end(
    response: UpstreamResponse,
    done: impl FnOnce(Option<&[u8]>) + Send + 'static,
) -> UpstreamResponse {
    struct Recording<F> {
        inner: crate::upstream::BodyStream,
        seen: Option<BytesMut>,
        done: F,
    }
    let recording = Recording {
        inner: response.body,
        seen: Some(BytesMut::new()),
        done,
    };
    let body = futures_util::stream::unfold(Some(recording), |state| async move {
        let mut state = state?;
        match state.inner.next().await {
            Some(Ok(chunk)) => {
                let outgrown = state
                    .seen
                    .as_ref()
                    .is_some_and(|seen| seen.len() + chunk.len() > MAX_RECORDED);
                match &mut state.seen {
                    Some(_) if outgrown => state.seen = None,
                    Some(seen) => seen.extend_from_slice(&chunk),
                    None => {}
                }
                Some((Ok(chunk), Some(state)))
            }
            Some(Err(error)) => Some((Err(error), None)),
            None => {
                (state.done)(state.seen.as_deref());
                None
            }
        }
    })
    .boxed();
    UpstreamResponse { body, ..response }
}

/// The finished response object in a JSON answer or an SSE stream.
fn final_response(body: &[u8]) -> Option<Value> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return (value.get("object")? == "response").then_some(value);
    }
    std::str::from_utf8(body)
        .ok()?
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event.get("type").is_some_and(|t| t == "response.completed"))
        .and_then(|mut event| event.get_mut("response").map(Value::take))
}

/// The request's `input` as the list `input_items` answers with.
fn input_items(request: &[u8]) -> Value {
    let request: Value = serde_json::from_slice(request).unwrap_or_default();
    let items: Vec<Value> = match request.get("input") {
        Some(Value::String(text)) => vec![json!({
            "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]
        })],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = items
        .into_iter()
        .enumerate()
        .map(|(index, mut item)| {
            if let Value::Object(fields) = &mut item {
                fields
                    .entry("id")
                    .or_insert_with(|| json!(format!("msg_input_{index}")));
            }
            item
        })
        .collect();
    json!({
        "object": "list",
        "first_id": data.first().and_then(|item| item.get("id")),
        "last_id": data.last().and_then(|item| item.get("id")),
        "data": data,
        "has_more": false
    })
}

/// A 404 for a `conversation` this account does not hold.
pub fn unknown_conversation(id: &str) -> UpstreamResponse {
    not_found(
        &format!("Conversation with id '{}' not found.", clip(id)),
        Some("conversation"),
    )
}

fn not_found(message: &str, param: Option<&str>) -> UpstreamResponse {
    json_reply(
        StatusCode::NOT_FOUND,
        error_body(message, "invalid_request_error", param, None),
    )
}
