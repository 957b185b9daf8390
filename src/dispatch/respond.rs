//! Turning upstream answers into client responses: header filtering, body
//! collection bounded in time (idle timeout and the request's deadline) and
//! size, and upstream error bodies normalised to OpenAI's four-key shape.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, StatusCode, header};
use serde_json::Value;
use tokio::time::Instant;

use crate::upstream::{BodyStream, UpstreamError, UpstreamResponse};
use crate::util::headers::{X_REQUEST_ID, X_UPSTREAM_REQUEST_ID, is_id};
use crate::vocab::error::{GatewayError, error_body};

/// Upstream error bodies are read up to this size; the rest is dropped.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Headers never copied from upstream: hop-by-hop ones, lengths the server
/// recomputes, and ones that identify the provider account behind the gateway.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "openai-organization",
    "openai-project",
    "alt-svc",
];

pub fn copy_headers(upstream: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in upstream {
        if *name == X_REQUEST_ID {
            if is_id(value) {
                out.insert(X_UPSTREAM_REQUEST_ID, value.clone());
            }
        } else if !is_dropped(name) {
            out.append(name.clone(), value.clone());
        }
    }
}

/// The provider account's own rate-limit headers describe a quota shared by
/// every caller; the limiter sets the caller's instead.
fn is_dropped(name: &HeaderName) -> bool {
    DROPPED.contains(&name.as_str()) || name.as_str().starts_with("x-ratelimit-")
}

pub fn upstream_failure(deployment: &str, error: &UpstreamError) -> GatewayError {
    GatewayError::Upstream {
        deployment: deployment.to_owned(),
        reason: error.to_string(),
    }
}

/// How long and how much of an upstream body may be read.
#[derive(Clone, Copy)]
pub struct Reading {
    /// Longest gap between chunks (the deployment's `timeout`).
    pub idle: Duration,
    /// The request's deadline: bounds the whole read, however the body drips.
    pub deadline: Instant,
    /// When the attempt began, to say how long it was given when the
    /// deadline, not the idle timeout, ends it.
    pub started: Instant,
    /// Largest body kept (`[server] max_response_bytes`).
    pub max_bytes: usize,
}

/// Why a body read stopped early.
enum Stop {
    /// Nothing came within the idle timeout or before the deadline; the
    /// bound that ran out, in milliseconds.
    Timeout(u128),
    Broken(UpstreamError),
}

impl Reading {
    /// The next chunk, waiting no longer than the idle timeout or the deadline.
    async fn next(&self, body: &mut BodyStream) -> Result<Option<Bytes>, Stop> {
        let now = Instant::now();
        let until = (now + self.idle).min(self.deadline);
        match tokio::time::timeout_at(until, body.next()).await {
            Err(_) if until == self.deadline => Err(Stop::Timeout(
                self.deadline
                    .saturating_duration_since(self.started)
                    .as_millis(),
            )),
            Err(_) => Err(Stop::Timeout(self.idle.as_millis())),
            Ok(None) => Ok(None),
            Ok(Some(chunk)) => chunk.map(Some).map_err(Stop::Broken),
        }
    }
}

/// Reads a whole 2xx body within `reading`'s time and size bounds. `declared`
/// is the upstream's `content-length`: too large fails before reading, and a
/// fitting one sizes the buffer once.
pub async fn collect_body(
    mut body: BodyStream,
    declared: Option<u64>,
    deployment: &str,
    reading: &Reading,
) -> Result<Bytes, GatewayError> {
    let too_large = || GatewayError::UpstreamResponseTooLarge {
        deployment: deployment.to_owned(),
        limit: reading.max_bytes,
    };
    if declared.is_some_and(|length| length > reading.max_bytes as u64) {
        return Err(too_large());
    }
    // Most bodies arrive as one chunk: keep it without copying.
    let mut single: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    let mut total = 0usize;
    loop {
        let chunk = match reading.next(&mut body).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(Stop::Timeout(timeout_ms)) => {
                return Err(GatewayError::UpstreamTimeout {
                    deployment: deployment.to_owned(),
                    timeout_ms,
                });
            }
            Err(Stop::Broken(error)) => return Err(upstream_failure(deployment, &error)),
        };
        total = total.saturating_add(chunk.len());
        if total > reading.max_bytes {
            return Err(too_large());
        }
        match single.take() {
            None if buffer.is_empty() => single = Some(chunk),
            previous => {
                if buffer.is_empty() {
                    buffer.reserve(declared.map_or(0, |length| length as usize).max(total));
                }
                if let Some(previous) = previous {
                    buffer.extend_from_slice(&previous);
                }
                buffer.extend_from_slice(&chunk);
            }
        }
    }
    Ok(single.unwrap_or_else(|| buffer.freeze()))
}

/// The `content-length` an upstream declared, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads an upstream error body and normalises it. The read is bounded in
/// size (the rest is dropped) and in time: a body that drips or stalls is
/// cut where it is, and the client still gets the upstream's status.
pub async fn collect_error_body(
    response: UpstreamResponse,
    deployment: Arc<str>,
    reading: &Reading,
) -> Bytes {
    let mut body = response.body;
    let mut raw = BytesMut::new();
    while let Ok(Some(chunk)) = reading.next(&mut body).await {
        let room = ERROR_BODY_LIMIT.saturating_sub(raw.len());
        raw.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if raw.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    normalize_error_body(response.status, &deployment, &raw)
}

/// An upstream answer that must not reach the client as it is.
#[derive(Debug, thiserror::Error)]
pub enum Misdirected {
    /// Redirects are never followed (the key would go to another host) nor
    /// relayed (their `Location` would send the client around the gateway).
    #[error(
        "answered {0}, a redirect, which the gateway does not follow (check the deployment's `base_url`)"
    )]
    Redirect(StatusCode),
    /// A 2xx to a streamed request that is not an event stream: relaying it
    /// as `200 text/event-stream` would hand the client a broken stream.
    #[error("answered a streamed request with content-type `{0}` instead of text/event-stream")]
    NotSse(String),
}

/// Longest content type quoted back in an error.
const QUOTED_TYPE_LIMIT: usize = 64;

/// Whether `response` is a redirect, or (for a stream) a 2xx not in SSE.
pub fn misdirected(response: &UpstreamResponse, streamed: bool) -> Option<Misdirected> {
    if response.status.is_redirection() {
        return Some(Misdirected::Redirect(response.status));
    }
    if !streamed || !response.status.is_success() {
        return None;
    }
    let content_type = response.headers.get(header::CONTENT_TYPE);
    let essence = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::trim);
    if essence.is_some_and(|essence| essence.eq_ignore_ascii_case("text/event-stream")) {
        return None;
    }
    let quoted = match content_type {
        None => "(none)".to_owned(),
        Some(value) => String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(QUOTED_TYPE_LIMIT)
            .collect(),
    };
    Some(Misdirected::NotSse(quoted))
}

/// Keeps an upstream error as it is when it already has OpenAI's shape (or
/// Anthropic's, `"type": "error"`, which only a relayed Messages call gets),
/// fills in missing keys (Azure omits `type` and `param`), and wraps
/// anything else.
pub fn normalize_error_body(status: StatusCode, deployment: &str, raw: &[u8]) -> Bytes {
    let default_type = match status.as_u16() {
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    if let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(raw)
        // Anthropic's shape, from a relayed Messages call: its client reads it.
        && let anthropic = root.get("type").and_then(Value::as_str) == Some("error")
        && let Some(Value::Object(error)) = root.get_mut("error")
    {
        let complete = ["message", "type", "param", "code"]
            .iter()
            .all(|key| error.contains_key(*key));
        if complete || anthropic {
            return Bytes::copy_from_slice(raw);
        }
        error
            .entry("message")
            .or_insert_with(|| format!("Upstream answered {status}.").into());
        error.entry("type").or_insert_with(|| default_type.into());
        error.entry("param").or_insert(Value::Null);
        error.entry("code").or_insert(Value::Null);
        return Bytes::from(Value::Object(root).to_string());
    }
    let excerpt: String = String::from_utf8_lossy(raw).chars().take(200).collect();
    let message = format!(
        "Upstream deployment `{deployment}` answered {status}: {}",
        excerpt.trim()
    );
    error_body(&message, default_type, None, Some("upstream_error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &Bytes) -> serde_json::Map<String, Value> {
        let value: Value = serde_json::from_slice(body).unwrap();
        value["error"].as_object().unwrap().clone()
    }

    #[test]
    fn complete_openai_errors_pass_unchanged() {
        let raw = br#"{"error":{"message":"m","type":"t","param":null,"code":"c"}}"#;
        let out = normalize_error_body(StatusCode::BAD_REQUEST, "d", raw);
        assert_eq!(&out[..], &raw[..]);
    }

    #[test]
    fn azure_errors_gain_missing_keys() {
        let raw = br#"{"error":{"code":"429","message":"Please retry after 5 seconds."}}"#;
        let error = error_of(&normalize_error_body(
            StatusCode::TOO_MANY_REQUESTS,
            "d",
            raw,
        ));
        assert_eq!(error["code"], "429");
        assert_eq!(error["type"], "rate_limit_error");
        assert!(error["param"].is_null());
    }

    #[test]
    fn non_json_errors_are_wrapped() {
        let out = normalize_error_body(StatusCode::BAD_GATEWAY, "eu", b"<html>bad gateway</html>");
        let error = error_of(&out);
        assert_eq!(error["type"], "server_error");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("`eu` answered 502")
        );
    }

    fn answer(status: u16, content_type: Option<&'static str>) -> UpstreamResponse {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(value));
        }
        UpstreamResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: futures_util::stream::empty().boxed(),
        }
    }

    #[test]
    fn streams_need_an_event_stream_and_nothing_takes_a_redirect() {
        let sse = answer(200, Some("Text/Event-Stream; charset=utf-8"));
        assert!(misdirected(&sse, true).is_none());
        let json = answer(200, Some("application/json"));
        assert!(misdirected(&json, false).is_none());
        assert!(matches!(
            misdirected(&json, true),
            Some(Misdirected::NotSse(quoted)) if quoted == "application/json"
        ));
        assert!(matches!(
            misdirected(&answer(200, None), true),
            Some(Misdirected::NotSse(_))
        ));
        // An error status keeps its own handling, streamed or not.
        assert!(misdirected(&answer(429, Some("application/json")), true).is_none());
        assert!(matches!(
            misdirected(&answer(301, None), false),
            Some(Misdirected::Redirect(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_read_stops_at_its_size_or_its_deadline() {
        let reading = Reading {
            idle: Duration::from_secs(5),
            deadline: Instant::now() + Duration::from_secs(2),
            started: Instant::now(),
            max_bytes: 10,
        };
        let body = |chunks: &[&'static str]| -> BodyStream {
            futures_util::stream::iter(chunks.to_vec())
                .map(|c| Ok(Bytes::from_static(c.as_bytes())))
                .boxed()
        };
        let read = collect_body(body(&["12345", "6789"]), None, "d", &reading).await;
        assert_eq!(read.unwrap(), "123456789");
        let over = collect_body(body(&["12345", "67890", "1"]), None, "d", &reading).await;
        assert!(matches!(
            over,
            Err(GatewayError::UpstreamResponseTooLarge { .. })
        ));
        let declared = collect_body(body(&[]), Some(11), "d", &reading).await;
        assert!(matches!(
            declared,
            Err(GatewayError::UpstreamResponseTooLarge { .. })
        ));
        // One byte a second: idle never fires, the deadline does.
        let drip = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok(Bytes::from_static(b"x")), ()))
        })
        .boxed();
        let started = Instant::now();
        let stalled = collect_body(drip, None, "d", &reading).await;
        assert!(matches!(
            stalled,
            Err(GatewayError::UpstreamTimeout {
                timeout_ms: 2000,
                ..
            })
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
