//! One `call` span per request, so that every line a call logs (retries,
//! fallbacks, breaker changes, cache and limiter warnings, its access line)
//! carries its request id. The access-log layer enters it for the whole
//! response future; `InSpan` enters it again for every poll of the response
//! body and for its drop, because a stream is relayed after the handler has
//! returned and its access line is written when the relay drops.
//!
//! `key`, `model`, `served_model` and `deployment` start empty and are
//! recorded on the span (`Span::record`) by the layers that learn them, each
//! once: a field recorded twice is written twice by the text format.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use tracing::Span;
use tracing::field::Empty;

use crate::util::headers::X_REQUEST_ID;
use crate::util::text::clip;

/// The span of one call. At ERROR level so it exists whenever any line is
/// logged at all: a span filtered out by the level would leave the warnings
/// inside it without their request id.
pub fn span_of(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-");
    tracing::error_span!(
        "call",
        request_id,
        method = %request.method(),
        path = %clip(request.uri().path()),
        key = Empty,
        model = Empty,
        served_model = Empty,
        deployment = Empty,
    )
}

/// The response with its body polled and dropped inside `span` (as is,
/// when no subscriber records spans: nothing to enter).
pub fn body_in(span: Span, response: Response) -> Response {
    if span.is_disabled() {
        return response;
    }
    response.map(|body| {
        Body::new(InSpan {
            body: Some(body),
            span,
        })
    })
}

/// A body that enters its call's span whenever it runs code.
struct InSpan {
    /// `None` only while being dropped.
    body: Option<Body>,
    span: Span,
}

impl HttpBody for InSpan {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

/// A stream's relay writes its access line and settles its usage when it
/// drops: inside the span too.
impl Drop for InSpan {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        drop(self.body.take());
    }
}
