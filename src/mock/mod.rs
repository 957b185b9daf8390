//! `provider = "mock"`: a simulated OpenAI upstream inside the process, so a
//! fresh checkout answers real SDK and framework calls without a provider
//! account. It honours what frameworks rely on (`tools`, `response_format`,
//! `n`, `logprobs`, embeddings input forms), counts tokens with the model's
//! tokenizer, and refuses bad requests like the API. The content is
//! deterministic: the same request body always yields the same answer.

mod answer;
mod chat;
mod embeddings;
mod invalid;
mod media;
mod objects;
mod prompt_schema;
mod realtime;
mod request;
mod responses;
mod schema;
mod stored;
mod text;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use self::answer::{Answer, Inputs};
use self::invalid::{Checked, Invalid, boolean};
use self::objects::MockObjects;
use self::stored::MockResponses;
use crate::config::{DeploymentConfig, MockConfig};
use crate::engines::tokens::{Encoding, prompt_tokens, responses_input_tokens};
use crate::upstream::{LocalProvider, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::vocab::{Endpoint, RESPONSES};

/// A mock deployment: its answers, and the objects it keeps (responses,
/// conversations, stored chat completions...) for the calls on them.
pub struct MockProvider {
    upstream: MockUpstream,
    stored: MockResponses,
    objects: MockObjects,
}

/// The mock's parsers the fuzz targets drive (see `sluice::fuzzing`).
#[doc(hidden)]
pub mod fuzzing {
    pub use super::prompt_schema::schema_in;
    pub use super::realtime::MockSession;
}

/// What the composition root registers for `provider = "mock"`.
pub fn provider(config: &DeploymentConfig) -> std::sync::Arc<dyn LocalProvider> {
    std::sync::Arc::new(MockProvider {
        upstream: MockUpstream::new(&config.mock),
        stored: MockResponses::default(),
        objects: MockObjects::default(),
    })
}

impl LocalProvider for MockProvider {
    fn answer(
        &self,
        request: UpstreamRequest,
    ) -> futures_util::future::BoxFuture<'_, UpstreamResponse> {
        Box::pin(async move {
            let (mock, stored, objects) = (&self.upstream, &self.stored, &self.objects);
            if let Some(call) = &request.stored {
                return if *call.resource == RESPONSES {
                    stored.answer(call)
                } else {
                    objects.answer(call, &request.body)
                };
            }
            let model = &request.client_model;
            match request.endpoint {
                Endpoint::Responses
                | Endpoint::ResponsesInputTokens
                | Endpoint::ResponsesCompact => {}
                Endpoint::ChatCompletions => {
                    let response = mock.respond(request.endpoint, model, &request.body).await;
                    return keep_if_stored(objects, &request.body, response);
                }
                _ => return mock.respond(request.endpoint, model, &request.body).await,
            }
            let conversation = conversation_of(&request.body);
            if let Some(refusal) = stored.unknown_previous(&request.body).or_else(|| {
                conversation
                    .as_deref()
                    .filter(|id| !objects.has_conversation(id))
                    .map(stored::unknown_conversation)
            }) {
                return refusal;
            }
            let response = mock.respond(request.endpoint, model, &request.body).await;
            if request.endpoint != Endpoint::Responses {
                return response;
            }
            let conversation = conversation.map(|id| (objects.clone(), id));
            stored.remember(&request.body, response, conversation)
        })
    }

    fn realtime(&self, model: &str, beta: bool) -> Option<Box<dyn crate::upstream::LocalSession>> {
        Some(Box::new(realtime::MockSession::new(model, beta)))
    }
}

/// A chat completion made with `store: true` is kept, whole or streamed.
fn keep_if_stored(
    objects: &MockObjects,
    body: &[u8],
    response: UpstreamResponse,
) -> UpstreamResponse {
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    if request["store"] != true || !response.status.is_success() {
        return response;
    }
    let objects = objects.clone();
    stored::on_end(response, move |answer| {
        if let Some(completion) = answer.and_then(chat::assembled) {
            objects.keep_chat(&completion, &request);
        }
    })
}

/// The conversation a Responses request names: an id, or `{"id": ...}`.
fn conversation_of(body: &[u8]) -> Option<String> {
    let request: Value = serde_json::from_slice(body).ok()?;
    match request.get("conversation")? {
        Value::String(id) => Some(id.clone()),
        Value::Object(conversation) => conversation.get("id")?.as_str().map(str::to_owned),
        _ => None,
    }
}

pub struct MockUpstream {
    latency: Duration,
    chunks: usize,
    chunk_interval: Duration,
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
        self.reply(endpoint, model, body)
            .unwrap_or_else(|invalid| body_response(invalid.status, &invalid.body()))
    }

    fn reply(&self, endpoint: Endpoint, model: &str, body: &[u8]) -> Checked<UpstreamResponse> {
        serves(endpoint, model)?;
        if endpoint.takes_multipart() {
            // Audio uploads are multipart, not JSON.
            return Ok(media::respond(endpoint, model, body));
        }
        let mut request: Value = serde_json::from_slice(body).map_err(|_| not_json())?;
        let stream = boolean(&request, "stream")?;
        let Value::Object(fields) = &mut request else {
            return Err(not_json());
        };
        let include_usage = match fields.remove("stream_options") {
            None | Some(Value::Null) => false,
            Some(options @ Value::Object(_)) => options["include_usage"] == true,
            Some(other) => return Err(Invalid::wrong_type("stream_options", "an object", &other)),
        };
        // Streamed or not, the same question gets the same answer.
        fields.remove("stream");
        let encoding = Encoding::for_model(model);
        let prompt_tokens = prompt_tokens(endpoint, fields, encoding);
        let inputs = Inputs {
            model,
            seed: seed_of(&request),
            bpe: encoding.bpe(),
            prompt_tokens,
            chunks: self.chunks,
        };
        let answer = |plan| Answer::new(&plan, &inputs);
        Ok(match (endpoint, stream) {
            (Endpoint::Embeddings, _) => {
                json_response(&embeddings::embeddings(model, &request, inputs.bpe)?)
            }
            (Endpoint::ChatCompletions, false) => {
                json_response(&chat::chat(&answer(request::chat(&request, inputs.seed)?)))
            }
            (Endpoint::ChatCompletions, true) => self.sse(chat::chat_events(
                &answer(request::chat(&request, inputs.seed)?),
                include_usage,
            )),
            (Endpoint::Completions, false) => {
                json_response(&chat::completion(&answer(request::completions(&request)?)))
            }
            (Endpoint::Completions, true) => self.sse(chat::completion_events(
                &answer(request::completions(&request)?),
                include_usage,
            )),
            (Endpoint::Responses, false) => json_response(&responses::response_object(
                &answer(request::responses(&request, inputs.seed)?),
                &request,
                true,
            )),
            (Endpoint::Responses, true) => self.sse(responses::responses_events(
                &answer(request::responses(&request, inputs.seed)?),
                &request,
            )),
            (Endpoint::ResponsesInputTokens, _) => json_response(&serde_json::json!({
                "object": "response.input_tokens",
                "input_tokens": request.as_object().map_or(0, |fields| responses_input_tokens(fields, encoding)),
            })),
            (Endpoint::RealtimeClientSecrets | Endpoint::RealtimeSessions, _) => {
                json_response(&realtime::client_secret(endpoint, model, &request))
            }
            (Endpoint::ResponsesCompact, _) => {
                json_response(&responses::compaction(&request, prompt_tokens))
            }
            // Moderations, images and speech.
            (other, _) => media::respond(other, model, body),
        })
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

/// What a mock account keeps of its objects: bounded in count and age.
fn account_cache<V: Clone + Send + Sync + 'static>() -> moka::sync::Cache<String, V> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(3600))
        .build()
}

fn seed_of(request: &Value) -> u64 {
    let mut hasher = DefaultHasher::new();
    request.to_string().hash(&mut hasher);
    hasher.finish()
}

fn not_json() -> Invalid {
    Invalid::plain(
        StatusCode::BAD_REQUEST,
        "We could not parse the JSON body of your request. The body must be a JSON object.".into(),
        None,
    )
}

/// An embedding model serves only embeddings, and a chat model no
/// embeddings, with the API's answers: chat with an embedding model is a
/// 404 "not a chat model"; embeddings from a chat model a 403.
fn serves(endpoint: Endpoint, model: &str) -> Checked<()> {
    let embedder = model.contains("embedding");
    match endpoint {
        Endpoint::Embeddings if !embedder => Err(Invalid::plain(
            StatusCode::FORBIDDEN,
            "You are not allowed to generate embeddings from this model".into(),
            None,
        )),
        Endpoint::ChatCompletions if embedder => Err(Invalid::plain(
            StatusCode::NOT_FOUND,
            "This is not a chat model and thus not supported in the v1/chat/completions endpoint. Did you mean to use v1/completions?".into(),
            Some("model"),
        )),
        Endpoint::Completions | Endpoint::Responses if embedder => Err(Invalid::plain(
            StatusCode::NOT_FOUND,
            format!(
                "This model is only supported in v1/embeddings and not in v1/{}.",
                endpoint.path()
            ),
            Some("model"),
        )),
        _ => Ok(()),
    }
}

fn json_response(value: &Value) -> UpstreamResponse {
    body_response(StatusCode::OK, value)
}

fn body_response(status: StatusCode, value: &Value) -> UpstreamResponse {
    json_reply(status, Bytes::from(value.to_string()))
}

/// A JSON answer with `status`, in one chunk.
fn json_reply(status: StatusCode, bytes: Bytes) -> UpstreamResponse {
    UpstreamResponse::json(status, HeaderMap::new(), bytes)
}
