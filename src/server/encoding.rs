//! Bodies on the wire: a client may send its request compressed
//! (`Content-Encoding`), and gets a large JSON answer compressed when its
//! `Accept-Encoding` allows. Streams and audio always go out as they came.

use axum::body::HttpBody;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use tower_http::compression::predicate::Predicate;
use tower_http::compression::{CompressionLayer, CompressionLevel};

use crate::infra::sync_layer::Middleware;
use crate::vocab::error::GatewayError;

/// The request encodings the decoder (tower-http's) knows.
const DECODABLE: [&str; 4] = ["gzip", "deflate", "br", "zstd"];

/// Answers smaller than this go out as they are: compressing them saves
/// less than it costs.
const MIN_COMPRESSED: u64 = 1024;

/// Refuses an encoding the decoder does not know with an OpenAI-shaped 415
/// (the decoder's own refusal has no body), and spells a known one as the
/// decoder matches it: lowercase, without spaces. `identity` is dropped.
/// Decoding happens as the request layer reads the body, so its
/// `max_body_bytes` limit counts decoded bytes: a small bomb is cut at the
/// limit, never inflated whole. A synchronous check: no boxed future or
/// clone of the stack per request, and a refusal drains a small body first.
#[derive(Clone, Copy)]
pub struct CheckEncoding;

impl Middleware for CheckEncoding {
    type Carry = ();

    fn before(&self, request: &mut Request) -> Result<(), Box<Response>> {
        let Some(value) = request.headers().get(header::CONTENT_ENCODING) else {
            return Ok(());
        };
        let name = value.to_str().unwrap_or("(not text)").trim();
        if name.eq_ignore_ascii_case("identity") {
            request.headers_mut().remove(header::CONTENT_ENCODING);
            return Ok(());
        }
        match DECODABLE
            .iter()
            .find(|known| known.eq_ignore_ascii_case(name))
        {
            Some(known) => {
                request
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static(known));
                Ok(())
            }
            None => Err(Box::new(
                GatewayError::UnsupportedEncoding { got: name.into() }.into_response(),
            )),
        }
    }

    fn after((): (), _response: &mut Response) {}
}

/// Compression of answers: only JSON, only of a known size past
/// `MIN_COMPRESSED` (a streamed body has no known size, so SSE, audio and
/// relayed streams are never held back to compress). A fast level: the
/// gateway's CPU is on the hot path.
pub fn compression() -> CompressionLayer<JsonAnswers> {
    CompressionLayer::new()
        .quality(CompressionLevel::Precise(3))
        .compress_when(JsonAnswers)
}

#[derive(Clone, Copy)]
pub struct JsonAnswers;

impl Predicate for JsonAnswers {
    fn should_compress<B: HttpBody>(&self, response: &http::Response<B>) -> bool {
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(crate::engines::request::is_json);
        json && response
            .body()
            .size_hint()
            .exact()
            .is_some_and(|size| size >= MIN_COMPRESSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(content_type: &str, body: axum::body::Body) -> http::Response<axum::body::Body> {
        let mut response = http::Response::new(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        response
    }

    #[test]
    fn only_large_json_of_known_size_is_compressed() {
        let big = || axum::body::Body::from(vec![b' '; 4096]);
        assert!(JsonAnswers.should_compress(&answer("application/json", big())));
        assert!(!JsonAnswers.should_compress(&answer("text/event-stream", big())));
        assert!(!JsonAnswers.should_compress(&answer("audio/mpeg", big())));
        let small = axum::body::Body::from(vec![b' '; 100]);
        assert!(!JsonAnswers.should_compress(&answer("application/json", small)));
        let stream =
            axum::body::Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from(vec![b' '; 4096]),
            )]));
        assert!(!JsonAnswers.should_compress(&answer("application/json", stream)));
    }
}
