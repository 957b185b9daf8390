//! Talking to providers: where a request goes (`target`), how it is sent
//! (`client`), the provider's Files and Batch APIs (`batch_api`), and the
//! in-process `mock` provider. Knows nothing of keys,
//! limits or routing policy.

pub mod batch_api;
mod client;
mod deployment;
mod mock;
pub mod multipart;
mod target;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};

pub use client::UpstreamClient;
pub use deployment::Deployment;

/// The OpenAI endpoints Sluice proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Moderations,
    ImageGenerations,
    AudioSpeech,
    AudioTranscriptions,
    AudioTranslations,
    /// A call on a response stored upstream (`GET`/`DELETE /responses/{id}`,
    /// `input_items`, `cancel`): no model in the body, routed by the id.
    StoredResponse,
}

impl Endpoint {
    /// The endpoints a model is named for, in declaration order (their
    /// upstream URLs are parsed once per model at start-up).
    pub const ALL: [Self; 9] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::Moderations,
        Self::ImageGenerations,
        Self::AudioSpeech,
        Self::AudioTranscriptions,
        Self::AudioTranslations,
    ];

    /// The endpoint for a path below the API root (`chat/completions`).
    pub fn from_api_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.path() == path)
    }

    /// Path below the API root, shared by OpenAI and Azure.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses | Self::StoredResponse => "responses",
            Self::Moderations => "moderations",
            Self::ImageGenerations => "images/generations",
            Self::AudioSpeech => "audio/speech",
            Self::AudioTranscriptions => "audio/transcriptions",
            Self::AudioTranslations => "audio/translations",
        }
    }

    /// Whether the body is `multipart/form-data` (an uploaded file) rather than JSON.
    pub fn takes_multipart(self) -> bool {
        matches!(self, Self::AudioTranscriptions | Self::AudioTranslations)
    }

    /// Whether the answer may carry no `usage` for work that costs no tokens
    /// (moderations, images and audio on older API versions): metered as 0
    /// tokens rather than estimated.
    pub fn usage_optional(self) -> bool {
        matches!(
            self,
            Self::Moderations
                | Self::ImageGenerations
                | Self::AudioSpeech
                | Self::AudioTranscriptions
                | Self::AudioTranslations
        )
    }
}

/// A call on a stored response: its method, the path below `responses/`
/// (`{id}`, `{id}/input_items`, `{id}/cancel`) and the client's query.
#[derive(Clone, Debug)]
pub struct StoredCall {
    pub method: http::Method,
    pub path: std::sync::Arc<str>,
    /// Without `api-version`, which only the gateway's own Azure paths take.
    pub query: Option<std::sync::Arc<str>>,
}

/// What the dispatcher hands to a deployment. Owned, so a streaming call can
/// outlive the handler that started it; cheap to clone for retries.
#[derive(Clone)]
pub struct UpstreamRequest {
    pub endpoint: Endpoint,
    /// The model being served (a fallback may differ from the body's).
    pub client_model: std::sync::Arc<str>,
    /// The model as the client's body names it.
    pub body_model: std::sync::Arc<str>,
    pub body: Bytes,
    pub request_id: Option<http::HeaderValue>,
    /// Passed through for beta features (`OpenAI-Beta`).
    pub openai_beta: Option<http::HeaderValue>,
    /// The client's `content-type` when the body is not JSON (a multipart upload).
    pub content_type: Option<http::HeaderValue>,
    /// Set for calls on a stored response.
    pub stored: Option<StoredCall>,
}

pub type BodyStream = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// An upstream answer whose headers have arrived; the body is still a stream.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("response body broke off: {0}")]
    Body(String),
    #[error("request body is not valid JSON: {0}")]
    Rewrite(String),
}
