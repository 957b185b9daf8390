//! Records which deployment created a stored object, from the answer
//! itself: a whole answer's `id`, or a stream's first event that names it
//! (Responses' `response.created`, a stored chat completion's first chunk).
//! The stream is read as it passes (chunks are never held back or
//! re-encoded); only its first events are copied aside until the id shows.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use memchr::memmem;
use serde::Deserialize;

use crate::engines::routing::{ResponsePin, ResponsePins};
use crate::upstream::{BodyStream, UpstreamError};

/// A stream whose `response.created` has not shown within this many bytes
/// is not recorded (its instructions and tools are echoed in that event).
const MAX_SCAN: usize = 1024 * 1024;

#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    response: Option<ResponseObject<'a>>,
    /// A chat completion chunk's own id and object.
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<std::borrow::Cow<'a, str>>,
}

/// The `id` of a whole answer that made an object. An error object (or
/// anything without an `id`) names none.
pub fn created_id(body: &[u8]) -> Option<String> {
    let object: ResponseObject<'_> = serde_json::from_slice(body).ok()?;
    (object.object.as_deref() != Some("error")).then(|| object.id.into_owned())
}

/// Passes a Responses stream through, recording its id when it shows.
pub struct PinTap {
    body: BodyStream,
    pins: Arc<ResponsePins>,
    /// Taken when the id is found (or the scan gives up).
    pin: Option<ResponsePin>,
    seen: BytesMut,
    /// The shared store's write, driven by this stream's polls.
    write: Option<BoxFuture<'static, ()>>,
}

impl PinTap {
    pub fn new(body: BodyStream, pins: Arc<ResponsePins>, pin: ResponsePin) -> Self {
        Self {
            body,
            pins,
            pin: Some(pin),
            seen: BytesMut::new(),
            write: None,
        }
    }

    fn scan(&mut self, chunk: &[u8]) {
        if self.pin.is_none() {
            return;
        }
        self.seen.extend_from_slice(chunk);
        while let Some(end) = event_end(&self.seen) {
            let event = self.seen.split_to(end);
            if let Some(id) = streamed_id(&event) {
                if let Some(pin) = self.pin.take() {
                    self.write = self.pins.remember(&id, pin);
                }
                self.seen = BytesMut::new();
                return;
            }
        }
        if self.seen.len() > MAX_SCAN {
            tracing::warn!("a Responses stream's id did not show in its first events; not pinned");
            self.pin = None;
            self.seen = BytesMut::new();
        }
    }

    /// Drives the store write; `true` once there is none left.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        let pending = self
            .write
            .as_mut()
            .is_some_and(|write| write.as_mut().poll(cx).is_pending());
        if !pending {
            self.write = None;
        }
        !pending
    }
}

impl Stream for PinTap {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let written = this.poll_write(cx);
        match this.body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.scan(&chunk);
                if this.write.is_some() {
                    this.poll_write(cx);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            // The end waits for the write, bounded by the store's timeout.
            Poll::Ready(None) if !written => Poll::Pending,
            other => other,
        }
    }
}

/// Where the first complete SSE event in `buffer` ends (after its blank line).
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = memmem::find(buffer, b"\n\n").map(|at| at + 2);
    let crlf = memmem::find(buffer, b"\n\r\n").map(|at| at + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The id a stream's event names: a `response.created` event's response,
/// or a chat completion chunk's own.
fn streamed_id(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .find_map(|data| {
            let event: Event<'_> = serde_json::from_str(data.trim()).ok()?;
            match (event.kind.as_deref(), event.object.as_deref()) {
                (Some("response.created"), _) => event.response.map(|r| r.id.into_owned()),
                (None, Some("chat.completion.chunk")) => event.id.map(|id| id.into_owned()),
                _ => None,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResponsesConfig;
    use futures_util::StreamExt;

    fn pin() -> ResponsePin {
        ResponsePin {
            deployment: Arc::from("d"),
            model: Arc::from("m"),
            owner: Arc::from("k"),
        }
    }

    #[tokio::test]
    async fn finds_the_id_across_chunk_splits_and_passes_chunks_unchanged() {
        let event = "event: response.created\r\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_42\",\"object\":\"response\",\"tools\":[{\"id\":\"x\"}]}}\r\n\r\nevent: response.in_progress\r\ndata: {}\r\n\r\n";
        let chunks: Vec<Bytes> = event
            .as_bytes()
            .chunks(7)
            .map(Bytes::copy_from_slice)
            .collect();
        let body = futures_util::stream::iter(chunks.clone().into_iter().map(Ok)).boxed();
        let pins = Arc::new(ResponsePins::new(&ResponsesConfig::default(), None));
        let tap = PinTap::new(body, pins.clone(), pin());
        let out: Vec<Bytes> = tap.map(|c| c.unwrap()).collect().await;
        assert_eq!(out, chunks);
        assert_eq!(pins.find("resp_42").await.unwrap(), Some(pin()));
    }

    #[test]
    fn whole_answers_name_their_id() {
        assert_eq!(
            created_id(br#"{"id":"resp_1","object":"response","output":[]}"#).as_deref(),
            Some("resp_1")
        );
        assert_eq!(
            created_id(br#"{"id":"conv_1","object":"conversation"}"#).as_deref(),
            Some("conv_1")
        );
        assert_eq!(created_id(br#"{"object":"list","data":[]}"#), None);
        assert_eq!(created_id(b"not json"), None);
    }

    #[test]
    fn a_chat_streams_first_chunk_names_its_id() {
        let chunk = b"data: {\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n";
        assert_eq!(streamed_id(chunk).as_deref(), Some("chatcmpl-7"));
        assert_eq!(streamed_id(b"data: [DONE]\n\n"), None);
    }
}
