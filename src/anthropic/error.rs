//! Errors in Anthropic's shape: `{"type":"error","error":{"type","message"}}`.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The status an Anthropic client sees for the gateway's `status`: 503
/// (no deployment can serve, maintenance) is Anthropic's 529 `overloaded`.
pub fn status_for(status: StatusCode) -> StatusCode {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => StatusCode::from_u16(529).unwrap_or(status),
        status => status,
    }
}

/// The error body for `status` with `message`.
pub fn error_body(status: StatusCode, message: &str) -> Bytes {
    let body = json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_anthropics_types() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
        ] {
            assert_eq!(error_type(StatusCode::from_u16(status).unwrap()), kind);
        }
        assert_eq!(status_for(StatusCode::SERVICE_UNAVAILABLE).as_u16(), 529);
        assert_eq!(status_for(StatusCode::TOO_MANY_REQUESTS).as_u16(), 429);
    }
}
