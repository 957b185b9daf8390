//! The Messages adapter: `POST /v1/messages` and `/v1/messages/count_tokens`
//! for Anthropic's clients. Layer 5 checks the key first (a body is read
//! only for a known key); the Messages call is then translated to a chat
//! completion (`crate::anthropic`) and run as that key through the
//! snapshot's internal router (layers 6 to 9 and the dispatcher, with no
//! asynchronous intake: a Messages client cannot read an OpenAI job), so
//! every stage applies as to any chat call; its answer is translated back,
//! whole or event by event, and every error is given Anthropic's shape.
//!
//! The call's own bytes travel with it (`MessagesBody`): an Anthropic
//! deployment is sent them as they came, with the client's
//! `anthropic-beta`, and its answer (whole, event stream or error) comes
//! back untranslated, recognised by its shape (every Messages answer has a
//! top-level `type`, no chat completion has). A call with no faithful chat
//! translation is still served when its model has an Anthropic
//! deployment; the stages then read its estimate view.
//!
//! The key may come as `x-api-key` (Anthropic's header) or
//! `Authorization: Bearer`. `anthropic-version` is accepted and not sent
//! on (Sluice sends its own).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::anthropic::{self, ChatRequest, Refused, StreamTranslator};
use crate::call::Call;
use crate::config::Provider;
use crate::engines::routing::ModelRouter;
use crate::engines::tokens::{Encoding, prompt_tokens};
use crate::infra::sse::{Event, Rewriter, json, only_comments, rewrite};
use crate::stages::{Entry, RequestReader, StageLayer, chain};
use crate::vocab::{Endpoint, MessagesBody};

/// The largest error body read to give it Anthropic's shape.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// The largest whole answer read to translate it (the dispatcher bounds
/// answers too, by `max_response_bytes`).
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;
/// The longest upstream event the stream translation reads.
const EVENT_LIMIT: usize = 4 * 1024 * 1024;
/// Headers not sent on to the chat call: the Anthropic protocol's, and
/// the asking for an asynchronous answer, which a Messages client could
/// not read (RFC 7240 lets a server answer at once instead).
const DROPPED: [&str; 6] = [
    "anthropic-version",
    "anthropic-beta",
    "content-length",
    "accept-encoding",
    "prefer",
    "x-sluice-async",
];

#[derive(Clone)]
struct Messages {
    /// The snapshot's internal routes (layers 6 to 9 and the dispatcher):
    /// the chat call runs here as the key layer 5 found.
    internal: Router,
    reader: Arc<RequestReader>,
    /// The snapshot's models: which have an Anthropic deployment.
    models: Arc<ModelRouter>,
}

/// The two routes behind `entry` (layer 5); `internal` is the snapshot's
/// internal router.
pub fn routes(
    internal: Router,
    reader: Arc<RequestReader>,
    models: Arc<ModelRouter>,
    entry: Entry,
) -> Router {
    let messages = Messages {
        internal,
        reader,
        models,
    };
    Router::new()
        .route("/v1/messages", post(create))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route_layer(StageLayer(Arc::new(chain![entry])))
        .with_state(messages)
        .layer(axum::middleware::map_response(anthropic_errors))
}

/// `POST /v1/messages`.
async fn create(State(messages): State<Messages>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // Layer 5's call, given to the internal router as its identity.
    let Some(call) = parts.extensions.remove::<Call>() else {
        return refusal(StatusCode::INTERNAL_SERVER_ERROR, "The call has no caller.");
    };
    parts.extensions.insert(call.identity);
    // The ledger records the API the client called.
    parts.extensions.insert(crate::vocab::Api::Anthropic);
    let bytes = match messages.reader.read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let (chat, untranslatable) = match messages.chat_view(&bytes) {
        Ok(view) => view,
        Err(refused) => return refusal(StatusCode::BAD_REQUEST, &refused.0),
    };
    let Ok(body) = serde_json::to_vec(&chat.body) else {
        return refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The request could not be written.",
        );
    };
    parts.extensions.insert(MessagesBody {
        body: bytes,
        beta: parts.headers.get("anthropic-beta").cloned(),
        untranslatable,
    });
    parts.uri = http::Uri::from_static("/v1/chat/completions");
    for name in DROPPED {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let request = Request::from_parts(parts, Body::from(body));
    let Ok(answer) = messages.internal.oneshot(request).await;
    translate(answer).await
}

impl Messages {
    /// The chat completion the stages run: the call's translation; or, when
    /// it has none but its model has an Anthropic deployment to relay it
    /// to, the estimate view and why it has none.
    fn chat_view(&self, bytes: &[u8]) -> Result<(ChatRequest, Option<Arc<str>>), Refused> {
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(bytes) else {
            return Err(Refused(
                "The request body must be a JSON object (a Messages request).".into(),
            ));
        };
        let refused = match anthropic::chat_of(&request) {
            Ok(chat) => return Ok((chat, None)),
            Err(refused) => refused,
        };
        let model = request.get("model").and_then(Value::as_str);
        if !model.is_some_and(|model| self.has_anthropic_deployment(model)) {
            return Err(refused);
        }
        let view = anthropic::estimate_view(&request)?;
        Ok((view, Some(Arc::from(refused.0))))
    }

    fn has_anthropic_deployment(&self, model: &str) -> bool {
        self.models
            .route(model)
            .is_some_and(|route| route.has_provider(Provider::Anthropic))
    }
}

/// The chat call's answer as the Messages API's: errors are left to
/// `anthropic_errors`; an answer an Anthropic deployment gave to the
/// call's own bytes is already the Messages API's and goes as it came;
/// a chat completion is translated, whole or event by event.
async fn translate(answer: Response) -> Response {
    if answer.status() != StatusCode::OK {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let streamed = crate::util::headers::is_event_stream(&parts.headers);
    if streamed {
        return Response::from_parts(parts, Body::from_stream(translated_stream(body)));
    }
    let bytes = match axum::body::to_bytes(body, ANSWER_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return refusal(StatusCode::BAD_GATEWAY, "The upstream's answer broke off."),
    };
    if has_type(&bytes, b"\"message\"") {
        return Response::from_parts(parts, Body::from(bytes));
    }
    match anthropic::to_message(&bytes) {
        Some(message) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, Body::from(message.to_string()))
        }
        None => refusal(
            StatusCode::BAD_GATEWAY,
            "The upstream's answer is not a chat completion this gateway can translate.",
        ),
    }
}

/// Whether the JSON object `doc` has a top-level `type` of `kind` (a JSON
/// string, quotes included). Chat completions have no `type`; every
/// Messages answer and error has one.
fn has_type(doc: &[u8], kind: &[u8]) -> bool {
    json::member(doc, b"type").is_some_and(|member| doc[member.value] == *kind)
}

/// The chat stream's events, translated as they arrive; a stream that
/// breaks or ends early ends with an `error` event. A relayed Messages
/// stream goes as it came, but for the error events the gateway adds.
fn translated_stream(body: Body) -> impl futures_util::Stream<Item = Result<Bytes, axum::Error>> {
    let events = MessagesEvents {
        translator: StreamTranslator::default(),
        relayed: None,
    };
    rewrite(body.into_data_stream(), EVENT_LIMIT, events)
}

/// The chat stream's events as the Messages API's.
struct MessagesEvents {
    translator: StreamTranslator,
    /// Whether the stream is already the Messages API's, known at its first
    /// event with data (named: Anthropic's are, chat chunks are not).
    relayed: Option<bool>,
}

impl Rewriter for MessagesEvents {
    fn event(&mut self, event: &Event<'_>, raw: &[u8], out: &mut Vec<u8>) {
        if only_comments(raw) {
            // Keep-alives go on as they are: clients ignore them, proxies
            // between see the connection is alive.
            return out.extend_from_slice(raw);
        }
        if !event.has_data {
            return;
        }
        // Anthropic names every event; the gateway's own error events (a
        // late failure, a timeout) are unnamed, and are translated.
        let own_event = !event.name.is_empty();
        let relayed = *self.relayed.get_or_insert(own_event);
        if relayed && own_event {
            out.extend_from_slice(raw);
        } else if event.is_done() {
            // A relayed stream has no `[DONE]`; a chat stream ends there.
            if !relayed {
                self.translator.end(out);
            }
        } else {
            // A chat chunk, or an error event the gateway added.
            self.translator.chunk(&event.data, out);
        }
    }

    fn too_long(&mut self, out: &mut Vec<u8>) {
        self.translator
            .fail("The upstream sent an event too long to read.", out);
    }

    fn broke(&mut self, out: &mut Vec<u8>) -> bool {
        self.translator
            .fail("The upstream's stream broke off.", out);
        false
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.relayed != Some(true) {
            self.translator.end(out);
        }
    }

    fn is_closed(&self) -> bool {
        self.translator.is_closed()
    }
}

/// `POST /v1/messages/count_tokens`: the translated request's prompt
/// tokens, counted as the rate limiter counts them.
async fn count_tokens(State(messages): State<Messages>, request: Request) -> Response {
    let identity = request
        .extensions()
        .get::<Call>()
        .map(|call| call.identity.clone());
    let (parts, body) = request.into_parts();
    let bytes = match messages.reader.read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    // count_tokens takes no max_tokens: a placeholder lets the reader pass.
    let mut request: serde_json::Map<String, Value> = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(_) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "The request body must be a JSON object.",
            );
        }
    };
    request.entry("max_tokens").or_insert(json!(1));
    let chat = match anthropic::chat_of(&request) {
        Ok(chat) => chat,
        Err(refused) => return refusal(StatusCode::BAD_REQUEST, &refused.0),
    };
    let model = chat
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if identity.is_some_and(|identity| !identity.may_use(model)) {
        let message = format!("model: {model} does not exist or this key may not use it.");
        return refusal(StatusCode::NOT_FOUND, &message);
    }
    let tokens = prompt_tokens(
        Endpoint::ChatCompletions,
        &chat.body,
        Encoding::for_model(model),
    );
    let body = json!({"input_tokens": tokens}).to_string();
    crate::vocab::error::json_response(StatusCode::OK, body.into())
}

/// An Anthropic-shaped error answer, marked so `anthropic_errors` passes it.
fn refusal(status: StatusCode, message: &str) -> Response {
    let body = anthropic::error_body(status, message);
    let mut response = crate::vocab::error::json_response(anthropic::status_for(status), body);
    response.extensions_mut().insert(AnthropicShaped);
    response
}

/// Any error answer on these routes (the stages' and the upstream's
/// included) in Anthropic's shape, its headers (`retry-after`, the
/// `x-sluice-*` ones) kept.
async fn anthropic_errors(response: Response) -> Response {
    let status = response.status();
    if status.is_success() || is_anthropic_error(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    parts.status = anthropic::status_for(status);
    // An Anthropic deployment's own error, relayed: already in shape.
    if has_type(&bytes, b"\"error\"") {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|body| Some(body.get("error")?.get("message")?.as_str()?.to_owned()))
        .unwrap_or_else(|| format!("The gateway answered {status}."));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(anthropic::error_body(status, &message)))
}

/// Whether `refusal` wrote this answer (it is in Anthropic's shape already).
fn is_anthropic_error(response: &Response) -> bool {
    response.extensions().get::<AnthropicShaped>().is_some()
}

/// Marks an answer already in Anthropic's shape.
#[derive(Clone, Copy)]
struct AnthropicShaped;
