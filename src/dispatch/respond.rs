//! Turning upstream answers into client responses: header filtering, body
//! collection under the idle timeout, and upstream error bodies normalised to
//! OpenAI's four-key shape.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, StatusCode};
use serde_json::Value;

use crate::error::{GatewayError, error_body};
use crate::headers::{X_REQUEST_ID, X_UPSTREAM_REQUEST_ID, is_id};
use crate::upstream::{BodyStream, UpstreamError, UpstreamResponse};

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

/// Reads a whole body, allowing at most `idle` between chunks.
pub async fn collect_body(
    mut body: BodyStream,
    deployment: &str,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
    let timeout = || GatewayError::UpstreamTimeout {
        deployment: deployment.to_owned(),
        timeout_ms: idle.as_millis(),
    };
    // Most bodies arrive as one chunk: keep it without copying.
    let mut single: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return Err(timeout()),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(|e| upstream_failure(deployment, &e))?,
        };
        match single.take() {
            None if buffer.is_empty() => single = Some(chunk),
            previous => {
                if let Some(previous) = previous {
                    buffer.extend_from_slice(&previous);
                }
                buffer.extend_from_slice(&chunk);
            }
        }
    }
    Ok(single.unwrap_or_else(|| buffer.freeze()))
}

/// Reads an upstream error body (bounded) and normalises it.
pub async fn collect_error_body(response: UpstreamResponse, deployment: Arc<str>) -> Bytes {
    let mut body = response.body;
    let mut raw = BytesMut::new();
    while let Some(Ok(chunk)) = body.next().await {
        let room = ERROR_BODY_LIMIT.saturating_sub(raw.len());
        raw.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if raw.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    normalize_error_body(response.status, &deployment, &raw)
}

/// Keeps an upstream error as it is when it already has OpenAI's shape, fills
/// in missing keys (Azure omits `type` and `param`), and wraps anything else.
pub fn normalize_error_body(status: StatusCode, deployment: &str, raw: &[u8]) -> Bytes {
    let default_type = match status.as_u16() {
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    if let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(raw)
        && let Some(Value::Object(error)) = root.get_mut("error")
    {
        let complete = ["message", "type", "param", "code"]
            .iter()
            .all(|key| error.contains_key(*key));
        if complete {
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
}
