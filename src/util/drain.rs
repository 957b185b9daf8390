//! The rest of a refused request's body, read and dropped. An HTTP/1.1
//! server that answers before reading the body cannot reuse the connection
//! (the unread bytes would be taken for the next request), so it closes it,
//! and a client still writing its body sees a broken pipe. Refusals (a wrong
//! key, an unknown path) read what is left of a small body first, within a
//! short deadline, so the connection survives; a larger or slower one is
//! answered with `connection: close` instead.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;

/// Bodies up to this size are drained after a refusal.
pub const DRAIN_LIMIT: usize = 64 * 1024;

/// How long a refusal waits for the rest of a body.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// Answers `response` once the request's body is drained (or given up on).
pub async fn refuse_after_drain(request: Request, mut response: Response) -> Response {
    let (parts, body) = request.into_parts();
    if !drain(&parts.headers, body).await {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads and drops `body` up to `DRAIN_LIMIT` bytes within `DRAIN_DEADLINE`;
/// whether it reached its end.
async fn drain(headers: &HeaderMap, mut body: Body) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > DRAIN_LIMIT) {
        return false;
    }
    let read_all = async {
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, |data| data.len());
            if read > DRAIN_LIMIT {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_DEADLINE, read_all)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Body, length: Option<usize>) -> Request {
        let mut request = Request::new(body);
        if let Some(length) = length {
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        request
    }

    async fn closes(request: Request) -> bool {
        let response = refuse_after_drain(request, Response::new(Body::empty())).await;
        response.headers().get(header::CONNECTION).is_some()
    }

    #[tokio::test]
    async fn small_bodies_are_drained_and_large_ones_close_the_connection() {
        assert!(!closes(request(Body::from(vec![b'x'; 1000]), Some(1000))).await);
        assert!(closes(request(Body::empty(), Some(DRAIN_LIMIT + 1))).await);
        assert!(closes(request(Body::from(vec![b'x'; DRAIN_LIMIT + 1]), None)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_given_up_on() {
        let endless = Body::from_stream(futures_util::stream::pending::<
            Result<bytes::Bytes, std::io::Error>,
        >());
        assert!(closes(request(endless, None)).await);
    }
}
