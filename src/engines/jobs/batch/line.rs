//! One batch line through the internal adapter, and what its answer means
//! for the batch: a result to record, a line to retry later (the gateway or
//! the upstream said "not now"), or a pause (the key's budget is spent).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::value::RawValue;

use super::validate::InputLine;
use crate::engines::internal::{BATCH_TAG, InternalCalls};
use crate::vocab::Identity;
use crate::vocab::{Discount, Usage};

/// Largest answer kept for one line.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Longest one line may take, retries and queueing in the gateway included.
const LINE_DEADLINE: Duration = Duration::from_secs(15 * 60);
/// Longest wait a retry hint may ask for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// What one line came to.
pub enum Outcome {
    /// Record it: an output line (`failed` false) or an error line.
    Done {
        failed: bool,
        output: String,
        usage: Usage,
        /// The gateway needed more than one attempt (the upstream pushed
        /// back): the batch should send less.
        pressed: bool,
    },
    /// Not now (429, overload, no deployment): run it again after `after`.
    Retry { after: Duration },
    /// The key's budget is spent: the batch waits.
    Pause,
}

/// What the runner sends every line with.
pub struct LineContext {
    pub batch_id: String,
    pub endpoint: String,
    /// The batch's key as the config in force has it, which `identity`
    /// derives from: a run compares it to notice a changed key.
    pub key: Arc<Identity>,
    pub identity: Arc<Identity>,
    pub discount: f64,
    pub internal: Arc<dyn InternalCalls>,
    /// The creating call's `traceparent`: sent with each line, which the
    /// internal adapter turns into a link.
    pub trace_parent: Option<http::HeaderValue>,
}

impl LineContext {
    pub fn new(
        batch_id: &str,
        endpoint: &str,
        key: Arc<Identity>,
        discount: f64,
        internal: Arc<dyn InternalCalls>,
        trace_parent: Option<http::HeaderValue>,
    ) -> Self {
        Self {
            batch_id: batch_id.to_owned(),
            endpoint: endpoint.to_owned(),
            identity: Arc::new(key.running_queued_work()),
            key,
            discount,
            internal,
            trace_parent,
        }
    }

    /// This context for lines started from now on, as `key` is now.
    pub fn for_key(&self, key: Arc<Identity>) -> Self {
        Self::new(
            &self.batch_id,
            &self.endpoint,
            key,
            self.discount,
            self.internal.clone(),
            self.trace_parent.clone(),
        )
    }
}

/// Sends one input line (already validated) and classifies the answer.
pub async fn run(context: &LineContext, raw: &[u8]) -> Outcome {
    let Ok(line) = serde_json::from_slice::<InputLine<'_>>(raw) else {
        return error_line("", "invalid_json_line", "The line is not a valid request.");
    };
    let request_id = super::super::new_id("batch_req_");
    let request = build(context, &request_id, line.body);
    let answer = tokio::time::timeout(LINE_DEADLINE, async {
        let response = context.internal.call(request).await;
        read(response).await
    })
    .await;
    let (status, headers, body) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(message)) => return error_line(&line.custom_id, "response_unreadable", &message),
        // Sending it again would cost as much and likely end the same way.
        Err(_) => {
            let message = format!("No answer within {} minutes.", LINE_DEADLINE.as_secs() / 60);
            return error_line(&line.custom_id, "timeout", &message);
        }
    };
    if let Some(outcome) = not_now(status, &headers, &body) {
        return outcome;
    }
    let usage = crate::infra::sse::usage::parse(&body).unwrap_or_default();
    let response_id = headers
        .get("x-upstream-request-id")
        .or_else(|| headers.get("x-request-id"))
        .and_then(|value| value.to_str().ok())
        .unwrap_or(&request_id)
        .to_owned();
    let output = output_line(&request_id, &line.custom_id, status, &response_id, &body);
    let pressed = headers
        .get("x-sluice-attempts")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u32>().ok())
        .is_some_and(|attempts| attempts > 1);
    Outcome::Done {
        failed: !(200..300).contains(&status),
        output,
        usage,
        pressed,
    }
}

fn build(context: &LineContext, request_id: &str, body: &RawValue) -> Request {
    let mut request = Request::new(Body::from(body.get().to_owned()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::try_from(context.endpoint.as_str()).unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert("x-sluice-priority", http::HeaderValue::from_static("batch"));
    if let Ok(tag) = http::HeaderValue::try_from(format!("{BATCH_TAG}:{}", context.batch_id)) {
        headers.insert(crate::util::headers::X_SLUICE_TAG, tag);
    }
    if let Ok(id) = http::HeaderValue::try_from(request_id) {
        headers.insert("x-request-id", id);
    }
    if let Some(parent) = &context.trace_parent {
        headers.insert("traceparent", parent.clone());
    }
    let extensions = request.extensions_mut();
    extensions.insert(context.identity.clone());
    extensions.insert(Discount(context.discount));
    request
}

type Answer = (u16, http::HeaderMap, bytes::Bytes);

async fn read(response: Response) -> Result<Answer, String> {
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|error| format!("The answer could not be read: {error}"))?
        .to_bytes();
    Ok((parts.status.as_u16(), parts.headers, body))
}

/// 429 and 503 answers that say "later" rather than "no": the line runs
/// again. A spent budget pauses the whole batch.
fn not_now(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Option<Outcome> {
    if status != 429 && status != 503 {
        return None;
    }
    let code = error_code(body);
    if code.as_deref() == Some("insufficient_quota") {
        return Some(Outcome::Pause);
    }
    let after = crate::engines::routing::retry_after(headers).unwrap_or(Duration::from_secs(1));
    Some(Outcome::Retry {
        after: after.min(MAX_RETRY_WAIT),
    })
}

fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: Option<String>,
    }
    serde_json::from_slice::<Envelope>(body).ok()?.error.code
}

/// `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`;
/// the body goes in as it came when it is JSON (no re-serialising).
pub fn output_line(
    id: &str,
    custom_id: &str,
    status: u16,
    request_id: &str,
    body: &[u8],
) -> String {
    let body_json = match serde_json::from_slice::<&RawValue>(body) {
        Ok(raw) => raw.get().to_owned(),
        Err(_) => serde_json::to_string(&String::from_utf8_lossy(body)).unwrap_or_default(),
    };
    format!(
        "{{\"id\":{},\"custom_id\":{},\"response\":{{\"status_code\":{status},\"request_id\":{},\"body\":{body_json}}},\"error\":null}}",
        quoted(id),
        quoted(custom_id),
        quoted(request_id)
    )
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A line that failed without an HTTP answer.
pub fn error_line(custom_id: &str, code: &str, message: &str) -> Outcome {
    Outcome::Done {
        failed: true,
        output: error_text(custom_id, code, message),
        usage: Usage::default(),
        pressed: false,
    }
}

/// `{"id", "custom_id", "response": null, "error": {"code", "message"}}`.
pub fn error_text(custom_id: &str, code: &str, message: &str) -> String {
    serde_json::json!({
        "id": super::super::new_id("batch_req_"),
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lines_embed_json_bodies_as_they_came() {
        let line = output_line("batch_req_1", "r\"1", 200, "req_9", br#"{"a": [1, 2]}"#);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["custom_id"], "r\"1");
        assert_eq!(parsed["response"]["body"]["a"][1], 2);
        assert!(line.contains(r#"{"a": [1, 2]}"#));
        let text = output_line("batch_req_1", "r", 502, "req", b"not json");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["response"]["body"], "not json");
    }

    #[test]
    fn a_spent_budget_pauses_and_a_throttle_retries() {
        let spent = br#"{"error":{"message":"m","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(matches!(
            not_now(429, &http::HeaderMap::new(), spent),
            Some(Outcome::Pause)
        ));
        let mut headers = http::HeaderMap::new();
        headers.insert("retry-after-ms", http::HeaderValue::from_static("250"));
        match not_now(429, &headers, b"{}") {
            Some(Outcome::Retry { after }) => assert_eq!(after, Duration::from_millis(250)),
            _ => panic!("not a retry"),
        }
        assert!(not_now(400, &headers, b"{}").is_none());
    }
}
