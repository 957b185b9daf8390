//! One error type for everything a client can be told, always rendered in
//! OpenAI's shape so SDKs raise the exception class they would against OpenAI.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::util::text::clip;

/// Errors that end a request before (or instead of) an upstream answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "You didn't provide an API key. Provide your Sluice key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )]
    MissingApiKey,
    #[error("Incorrect API key provided: {masked}.")]
    InvalidApiKey { masked: String },
    #[error("Too many failed authentication attempts from your address. Please try again in {}.", crate::util::go_duration::format_go_duration((*retry_after).max(std::time::Duration::from_millis(1))))]
    AuthThrottled { retry_after: std::time::Duration },
    #[error("The model `{model}` is not enabled for the key `{key}`.")]
    ModelNotAllowed { model: Echo, key: String },
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(Echo),
    #[error("{}esponse with id '{id}' not found.", if *previous { "Previous r" } else { "R" })]
    ResponseNotFound { id: Echo, previous: bool },
    /// A stored object of another kind (a conversation, a vector store...)
    /// this gateway did not record for the caller.
    #[error("{noun} with id '{id}' not found.")]
    ObjectNotFound {
        noun: &'static str,
        id: Echo,
        param: Option<&'static str>,
    },
    #[error(
        "The gateway cannot tell which deployment holds this response right now (its shared store is unreachable). Please try again shortly."
    )]
    ResponseStoreUnavailable,
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// A field Sluice reads has the wrong JSON type; worded as OpenAI words it.
    #[error("Invalid type for {}: expected {expected}, but got {got} instead.", field.map_or_else(|| "the request body".to_owned(), |name| format!("'{name}'")))]
    InvalidType {
        /// `None` when the body itself is not an object.
        field: Option<&'static str>,
        expected: &'static str,
        got: &'static str,
    },
    #[error(
        "Unsupported Content-Encoding ({got}); send the body as gzip, deflate, br, zstd or identity."
    )]
    UnsupportedEncoding { got: Echo },
    #[error(
        "This request has {count} input tokens, more than the {limit} allowed for {whose}. Please reduce the length of the messages."
    )]
    ContextLengthExceeded {
        limit: u64,
        count: u64,
        whose: String,
    },
    #[error("The {what} is spent ({spent} used); it resets at {resets_at}.")]
    BudgetExhausted {
        what: String,
        spent: String,
        resets_at: String,
    },
    #[error(
        "Spend budgets cannot be checked right now (the shared budget store is unreachable) and this gateway is set to fail closed. Please try again shortly."
    )]
    BudgetsUnavailable,
    #[error("Invalid Content-Type header ({got}); expected {expected}.")]
    UnsupportedMediaType { got: Echo, expected: &'static str },
    #[error("The request body was not received within {}.", crate::util::go_duration::format_go_duration(*.0))]
    BodyTimeout(std::time::Duration),
    #[error("Request body exceeds the limit of {limit} bytes.")]
    PayloadTooLarge { limit: usize },
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: Echo, path: Echo },
    #[error("Method {method} is not allowed for {path}.")]
    MethodNotAllowed { method: Echo, path: Echo },
    #[error("Upstream deployment `{deployment}` failed: {reason}")]
    Upstream { deployment: String, reason: String },
    #[error(
        "Upstream deployment `{deployment}` answered with more than {limit} bytes, the gateway's limit (`max_response_bytes`)."
    )]
    UpstreamResponseTooLarge { deployment: String, limit: usize },
    #[error("Upstream deployment `{deployment}` did not answer within {timeout_ms}ms.")]
    UpstreamTimeout {
        deployment: String,
        timeout_ms: u128,
    },
    #[error("No deployment of model `{model}` can serve right now (all are throttled, out of quota or failing).{}", retry_after.map(|wait| format!(" Please try again in {}.", crate::util::go_duration::format_go_duration(wait.max(std::time::Duration::from_millis(1))))).unwrap_or_default())]
    NoDeployment {
        model: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("The gateway is at capacity for {what} and could not admit the request in time. Please try again in {}.", crate::util::go_duration::format_go_duration((*retry_after).max(std::time::Duration::from_millis(1))))]
    Overloaded {
        what: String,
        retry_after: std::time::Duration,
    },
    #[error("The gateway is shutting down and its grace period is over; retry the request.")]
    ShuttingDown,
    /// A Realtime session asked for without a WebSocket upgrade.
    #[error(
        "The Realtime API is a WebSocket: open it with a GET that asks for `Upgrade: websocket` (HTTP/1.1)."
    )]
    WebSocketRequired,
    #[error("This key has {max} Realtime sessions open, as many as it may; close one first.")]
    TooManySessions { max: usize },
    #[error("The gateway hit an internal error while handling the request.")]
    Internal,
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingApiKey | Self::InvalidApiKey { .. } => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::BudgetExhausted { .. } | Self::AuthThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::ModelNotFound(_)
            | Self::UnknownRoute { .. }
            | Self::ResponseNotFound { .. }
            | Self::ObjectNotFound { .. } => StatusCode::NOT_FOUND,
            Self::InvalidRequest { .. }
            | Self::InvalidType { .. }
            | Self::ContextLengthExceeded { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType { .. } | Self::UnsupportedEncoding { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Upstream { .. } | Self::UpstreamResponseTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ShuttingDown
            | Self::NoDeployment { .. }
            | Self::Overloaded { .. }
            | Self::BudgetsUnavailable
            | Self::ResponseStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::WebSocketRequired => StatusCode::UPGRADE_REQUIRED,
            Self::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Overloaded { .. } => "server_overloaded",
            Self::BudgetExhausted { .. } => "insufficient_quota",
            Self::TooManySessions { .. } => "requests",
            Self::Upstream { .. }
            | Self::UpstreamResponseTooLarge { .. }
            | Self::UpstreamTimeout { .. }
            | Self::ShuttingDown
            | Self::NoDeployment { .. }
            | Self::BudgetsUnavailable
            | Self::ResponseStoreUnavailable
            | Self::Internal => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::MissingApiKey => None,
            Self::InvalidApiKey { .. } => Some("invalid_api_key"),
            Self::AuthThrottled { .. } => Some("too_many_failed_attempts"),
            Self::ModelNotAllowed { .. } => Some("model_not_allowed"),
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::InvalidRequest { .. } => Some("invalid_request"),
            Self::InvalidType { .. } => Some("invalid_type"),
            Self::UnsupportedEncoding { .. } => Some("unsupported_content_encoding"),
            Self::ResponseNotFound { previous: true, .. } => Some("previous_response_not_found"),
            Self::ResponseNotFound {
                previous: false, ..
            } => None,
            Self::ObjectNotFound { .. } => None,
            Self::ResponseStoreUnavailable => Some("response_store_unavailable"),
            Self::ContextLengthExceeded { .. } => Some("context_length_exceeded"),
            Self::UnsupportedMediaType { .. } => Some("unsupported_media_type"),
            Self::PayloadTooLarge { .. } => Some("request_too_large"),
            Self::BodyTimeout(_) => Some("request_timeout"),
            Self::UnknownRoute { .. } => Some("unknown_url"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::Upstream { .. } => Some("upstream_error"),
            Self::UpstreamResponseTooLarge { .. } => Some("upstream_response_too_large"),
            Self::UpstreamTimeout { .. } => Some("upstream_timeout"),
            Self::ShuttingDown => Some("shutting_down"),
            Self::WebSocketRequired => Some("websocket_required"),
            Self::TooManySessions { .. } => Some("too_many_sessions"),
            Self::NoDeployment { .. } => Some("no_deployment_available"),
            Self::Overloaded { .. } => Some("server_overloaded"),
            Self::BudgetExhausted { .. } => Some("insufficient_quota"),
            Self::BudgetsUnavailable => Some("budget_store_unavailable"),
            Self::Internal => Some("internal_error"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRequest { param, .. } => *param,
            Self::InvalidType { field, .. } => *field,
            Self::ContextLengthExceeded { .. } => Some("messages"),
            Self::ResponseNotFound { previous: true, .. } => Some("previous_response_id"),
            Self::ObjectNotFound { param, .. } => *param,
            Self::ModelNotFound(_) | Self::ModelNotAllowed { .. } => Some("model"),
            _ => None,
        }
    }

    /// The `{"error": {...}}` body as JSON bytes.
    pub fn body(&self) -> Bytes {
        error_body(&self.to_string(), self.kind(), self.param(), self.code())
    }

    /// The same error as one SSE event, for failures after a stream has begun.
    pub fn sse_event(&self) -> Bytes {
        sse_error_event(&self.body())
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// Serialises an OpenAI-shaped error body; all four keys are always present.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let envelope = ErrorEnvelope {
        error: ErrorObject {
            message,
            kind,
            param,
            code,
        },
    };
    // Serialising plain strings into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

/// Wraps an error body as `data: {...}\n\n`, the form SDKs raise on mid-stream.
pub fn sse_error_event(body: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(body.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status(), self.body());
        let wait = match &self {
            Self::NoDeployment {
                retry_after: Some(wait),
                ..
            }
            | Self::Overloaded {
                retry_after: wait, ..
            }
            | Self::AuthThrottled { retry_after: wait } => Some(*wait),
            Self::BudgetsUnavailable => Some(std::time::Duration::from_secs(1)),
            _ => None,
        };
        if let Some(wait) = wait {
            set_retry_after(response.headers_mut(), wait);
        }
        if matches!(self, Self::BodyTimeout(_)) {
            // The rest of the body may still be on its way: end the connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
            .extensions_mut()
            .insert(ErrorLogged(self.to_string()));
        response
    }
}

/// `retry-after` (seconds) and `retry-after-ms`, both rounded up: a client
/// told to come back never comes back too early.
pub fn set_retry_after(headers: &mut http::HeaderMap, wait: std::time::Duration) {
    let millis = wait.as_nanos().div_ceil(1_000_000).max(1) as u64;
    headers.insert("retry-after", HeaderValue::from(millis.div_ceil(1000)));
    headers.insert("retry-after-ms", HeaderValue::from(millis));
}

/// Carried on error responses so the access log can say why a request failed.
#[derive(Clone, Debug)]
pub struct ErrorLogged(pub String);

/// Client input quoted in an error: only made through `clip`, so no error
/// variant can carry an unbounded echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo(String);

impl From<&str> for Echo {
    fn from(input: &str) -> Self {
        Self(clip(input).into_owned())
    }
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::text::{ECHO_LIMIT, mask_key};

    #[test]
    fn retry_after_rounds_up() {
        let headers = |wait| {
            let mut headers = http::HeaderMap::new();
            set_retry_after(&mut headers, wait);
            let value = |name| headers[name].to_str().unwrap().parse::<u64>().unwrap();
            (value("retry-after"), value("retry-after-ms"))
        };
        let millis = std::time::Duration::from_millis;
        assert_eq!(headers(millis(1200)), (2, 1200));
        assert_eq!(headers(millis(1000)), (1, 1000));
        assert_eq!(headers(std::time::Duration::from_nanos(1)), (1, 1));
        assert_eq!(
            headers(std::time::Duration::from_micros(999_500)),
            (1, 1000)
        );
    }

    #[test]
    fn body_has_all_four_keys() {
        let body = GatewayError::MissingApiKey.body();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let error = value["error"].as_object().unwrap();
        for key in ["message", "type", "param", "code"] {
            assert!(error.contains_key(key), "missing {key}");
        }
    }

    #[test]
    fn masks_keys_without_revealing_the_middle() {
        assert_eq!(mask_key("sk-abcdefghijklmnop"), "...mnop");
        assert_eq!(mask_key("sk-abcdefghijk"), "****");
        assert_eq!(mask_key("short"), "****");
        assert_eq!(mask_key("sk-ünïcödé-kéy-1234"), "...1234");
    }

    #[test]
    fn echoes_are_clipped_and_say_so() {
        assert_eq!(clip("gpt-4o"), "gpt-4o");
        let long = "é".repeat(10_000);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"é".repeat(ECHO_LIMIT)));
        assert!(clipped.ends_with("... (20000 bytes, cut)"), "{clipped}");
        let error = GatewayError::ModelNotFound(Echo::from(long.as_str()));
        assert!(error.body().len() < 600, "{}", error.body().len());
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let event = GatewayError::Internal.sse_event();
        assert!(event.starts_with(b"data: {\"error\""));
        assert!(event.ends_with(b"\n\n"));
    }
}
