//! Talking to providers: where a request goes (`target`), how it is sent
//! (`client`), and the in-process `mock` provider. Knows nothing of keys,
//! limits or routing policy.

mod client;
mod deployment;
mod mock;
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
}

impl Endpoint {
    pub const ALL: [Self; 4] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
    ];

    /// The endpoint a gateway path proxies to, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/v1/chat/completions" => Some(Self::ChatCompletions),
            "/v1/completions" => Some(Self::Completions),
            "/v1/embeddings" => Some(Self::Embeddings),
            "/v1/responses" => Some(Self::Responses),
            _ => None,
        }
    }

    /// Path below the API root, shared by OpenAI and Azure.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
        }
    }
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
