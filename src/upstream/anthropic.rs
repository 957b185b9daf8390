//! Calls to an Anthropic deployment (`provider = "anthropic"`): the chat
//! request written as a Messages request, and the answer read back as a
//! chat completion, so everything above the client (usage, limits, the
//! cache, retries, the relay) sees an OpenAI answer. Anthropic's 529 is a
//! 503 and its rate-limit headers carry OpenAI's names
//! (`crate::anthropic::provider`).

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{StatusCode, header};

use super::{BodyStream, UpstreamError, UpstreamResponse};
use crate::anthropic::provider::{self, ChunkTranslator};
use crate::infra::sse::{Event, Rewriter, rewrite};
use crate::vocab::Endpoint;

/// The largest whole answer or error body read to translate it.
const ANSWER_LIMIT: usize = 16 * 1024 * 1024;
/// The longest stream event read.
const EVENT_LIMIT: usize = 4 * 1024 * 1024;

/// What the call sends: the Messages body, and whether the client asked for
/// a stream's usage chunk; or, when the request cannot be written, the 400
/// that answers it.
pub(super) fn request_body(
    endpoint: Endpoint,
    body: &[u8],
    upstream_model: &str,
) -> Result<(Bytes, bool), UpstreamResponse> {
    if endpoint != Endpoint::ChatCompletions {
        let message = format!(
            "This model is served by an Anthropic deployment, which takes chat completions only, not /v1/{}.",
            endpoint.path()
        );
        return Err(refusal(StatusCode::BAD_REQUEST, &message));
    }
    match provider::to_messages(body, upstream_model) {
        Ok((request, include_usage)) => Ok((Bytes::from(request.to_string()), include_usage)),
        Err(refused) => Err(refusal(StatusCode::BAD_REQUEST, &refused.0)),
    }
}

/// The headers every call carries besides the key.
pub(super) const VERSION_HEADER: (&str, &str) = ("anthropic-version", provider::VERSION);

/// An OpenAI-shaped error answer made here.
fn refusal(status: StatusCode, message: &str) -> UpstreamResponse {
    let body = crate::vocab::error::error_body(message, "invalid_request_error", None, None);
    whole(status, http::HeaderMap::new(), body)
}

fn whole(status: StatusCode, headers: http::HeaderMap, body: Bytes) -> UpstreamResponse {
    UpstreamResponse::json(status, headers, body)
}

/// Anthropic's answer as a chat completion's.
pub(super) async fn answer(response: UpstreamResponse, include_usage: bool) -> UpstreamResponse {
    let UpstreamResponse {
        status,
        mut headers,
        body,
    } = relayed(response);
    let streamed = crate::util::headers::is_event_stream(&headers);
    if status.is_success() && streamed {
        headers.remove(header::CONTENT_LENGTH);
        let body = chunks(body, unix_now(), include_usage).boxed();
        return UpstreamResponse {
            status,
            headers,
            body,
        };
    }
    let Ok(bytes) = collect(body).await else {
        let message = "The Anthropic deployment's answer broke off or is too large.";
        return refusal(StatusCode::BAD_GATEWAY, message);
    };
    let translated = match status.is_success() {
        true => provider::to_completion(&bytes, unix_now()),
        false => provider::to_openai_error(&bytes),
    };
    match translated {
        Some(value) => whole(status, headers, Bytes::from(value.to_string())),
        None if status.is_success() => refusal(
            StatusCode::BAD_GATEWAY,
            "The Anthropic deployment's answer is not a message.",
        ),
        None => {
            let message = format!("The Anthropic deployment answered {status}.");
            let body = crate::vocab::error::error_body(&message, "server_error", None, None);
            whole(status, headers, body)
        }
    }
}

async fn collect(mut body: BodyStream) -> Result<Bytes, UpstreamError> {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() > ANSWER_LIMIT {
            return Err(UpstreamError::Body("the answer is too large".into()));
        }
    }
    Ok(bytes.freeze())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Anthropic's events as chat chunks, translated as they arrive.
fn chunks(
    body: BodyStream,
    created: u64,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, UpstreamError>> {
    let chunks = ChatChunks(ChunkTranslator::new(created, include_usage));
    rewrite(body, EVENT_LIMIT, chunks)
}

/// Anthropic's events as chat chunks.
struct ChatChunks(ChunkTranslator);

impl Rewriter for ChatChunks {
    fn event(&mut self, event: &Event<'_>, _raw: &[u8], out: &mut Vec<u8>) {
        if event.has_data {
            self.0.event(&event.data, out);
        }
    }

    fn too_long(&mut self, out: &mut Vec<u8>) {
        self.0
            .fail("The provider sent an event too long to read.", out);
    }

    /// The break is the relay's to see: it ends the stream as for any
    /// upstream.
    fn broke(&mut self, _out: &mut Vec<u8>) -> bool {
        true
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.0.finish(out);
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A relayed Messages call's answer: its body as it came, its status and
/// rate-limit headers read as for a translated call, so failover, limits
/// and throttle marks treat it alike.
pub(super) fn relayed(response: UpstreamResponse) -> UpstreamResponse {
    let UpstreamResponse {
        status,
        mut headers,
        body,
    } = response;
    provider::map_headers(&mut headers, std::time::SystemTime::now());
    UpstreamResponse {
        status: provider::map_status(status),
        headers,
        body,
    }
}

/// The 400 for a Messages call that only an Anthropic deployment can
/// serve, sent to another.
pub(super) fn untranslatable(why: &str) -> UpstreamResponse {
    let message = format!("{why} (this model's deployment is not Anthropic's)");
    refusal(StatusCode::BAD_REQUEST, &message)
}
