//! What clients are told: OpenAI's 429 body and headers, and the caller's
//! key-level `x-ratelimit-*` headers on every response.

use std::time::Duration;

use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::bucket::Bucket;
use super::engine::Refused;
use super::gcra::Standing;
use crate::util::go_duration::format_go_duration;
use crate::vocab::error::{ErrorLogged, error_body, json_response, set_retry_after};

pub struct Refusal<'a> {
    pub bucket: &'a Bucket,
    pub refused: &'a Refused,
    pub requested: u64,
    pub model: &'a str,
    /// Every deployment of the model is out of quota (not just one named).
    pub every_deployment: bool,
}

pub fn rate_limited(refusal: Refusal<'_>) -> Response {
    let Refusal {
        bucket,
        refused,
        requested,
        model,
        every_deployment,
    } = refusal;
    let subject = if every_deployment {
        format!("every deployment of model {model}")
    } else {
        format!("{} {}", bucket.scope.as_str(), bucket.name)
    };
    let limit = bucket.shape.limit();
    let per = bucket.kind.per_minute();
    let (message, wait) = match refused {
        Refused::Never { .. } => (
            format!(
                "Request too large for {subject} on {per}: Limit {limit}, Requested {requested}. The input or output tokens must be reduced in order to run successfully."
            ),
            None,
        ),
        Refused::Wait {
            wait_secs, used, ..
        } => {
            let wait = Duration::from_secs_f64(wait_secs.max(0.001));
            (
                format!(
                    "Rate limit reached for {subject} on {per}: Limit {limit}, Used {used}, Requested {requested}. Please try again in {}.",
                    format_go_duration(wait.max(Duration::from_millis(1)))
                ),
                Some(wait),
            )
        }
    };
    let body = error_body(
        &message,
        bucket.kind.as_str(),
        None,
        Some("rate_limit_exceeded"),
    );
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, body);
    response.extensions_mut().insert(ErrorLogged(message));
    let headers = response.headers_mut();
    match wait {
        Some(wait) => set_retry_after(headers, wait),
        // SDKs retry 429s by default; this one can never succeed as sent.
        None => {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
    }
    response
}

pub fn store_unavailable() -> Response {
    let body = error_body(
        "Rate limits cannot be checked right now (the shared limiter store is unreachable) and this gateway is set to fail closed. Please try again shortly.",
        "server_error",
        None,
        Some("rate_limiter_unavailable"),
    );
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    set_retry_after(response.headers_mut(), Duration::from_secs(1));
    response
}

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`.
pub fn set_key_headers(
    headers: &mut HeaderMap,
    requests: Option<Standing>,
    tokens: Option<Standing>,
) {
    for (standing, names) in [(requests, &REQUEST_HEADERS), (tokens, &TOKEN_HEADERS)] {
        let Some(standing) = standing else { continue };
        insert(headers, names[0], standing.limit);
        insert(headers, names[1], standing.remaining);
        let reset = format_go_duration(Duration::from_secs_f64(standing.reset_secs.max(0.0)));
        if let Ok(value) = HeaderValue::from_str(&reset) {
            headers.insert(HeaderName::from_static(names[2]), value);
        }
    }
}

const REQUEST_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const TOKEN_HEADERS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

fn insert(headers: &mut HeaderMap, name: &'static str, value: u64) {
    headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
}
