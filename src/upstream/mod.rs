//! Talking to providers: where a request goes (`target`), how it is sent
//! (`client`; for an Anthropic deployment, translated both ways by
//! `anthropic`), the provider's Files and Batch APIs (`batch_api`), and the
//! in-process `mock` provider. Knows nothing of keys,
//! limits or routing policy.

mod anthropic;
pub mod batch_api;
mod client;
mod deployment;
pub mod multipart;
mod provider;
pub mod realtime;
mod target;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};

pub use client::UpstreamClient;
pub use deployment::Deployment;
pub use provider::{LocalProvider, LocalSession, Providers};

use crate::vocab::{Endpoint, StoredCall};

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
    /// W3C trace context: the attempt's span when Sluice traces, else the
    /// caller's own, passed on.
    pub traceparent: Option<http::HeaderValue>,
    pub tracestate: Option<http::HeaderValue>,
    /// A Messages call's own bytes: an Anthropic deployment gets these,
    /// and its answer comes back untranslated.
    pub messages: Option<crate::vocab::MessagesBody>,
}

pub type BodyStream = BoxStream<'static, Result<Bytes, UpstreamError>>;

/// An upstream answer whose headers have arrived; the body is still a stream.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

impl UpstreamResponse {
    /// A JSON answer in one chunk: `headers` (any length or encoding of
    /// the body it replaces dropped) with a JSON content type.
    pub fn json(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        use futures_util::StreamExt;
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(http::header::CONTENT_ENCODING);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Self {
            status,
            headers,
            body: futures_util::stream::once(async move { Ok(body) }).boxed(),
        }
    }
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
    /// A WebSocket handshake the provider answered with an HTTP error.
    #[error("the provider refused the session with {status}")]
    Refused { status: StatusCode, body: String },
}
