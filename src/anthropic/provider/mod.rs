//! Anthropic as a provider: an OpenAI-shaped chat call written as a
//! Messages request (`request`), and Anthropic's answer written back as a
//! chat completion, whole (`response`) or chunk by chunk (`stream`), its
//! headers and status in the terms the rest of the gateway reads.

mod request;
mod response;
mod stream;

use http::{HeaderMap, HeaderName, StatusCode};

pub use request::{DEFAULT_MAX_TOKENS, to_messages};
pub use response::{to_completion, to_openai_error};
pub use stream::ChunkTranslator;

/// The API version sent on every call.
pub const VERSION: &str = "2023-06-01";

/// Anthropic's rate-limit headers under OpenAI's names, so the deployment's
/// health reads them (`x-ratelimit-remaining-*`): a reported zero takes the
/// deployment out before it answers 429. Of the token counts, the lowest.
pub fn map_headers(headers: &mut HeaderMap) {
    let read =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let requests = read("anthropic-ratelimit-requests-remaining");
    let tokens = [
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
    ]
    .into_iter()
    .filter_map(read)
    .min();
    for (name, value) in [
        ("x-ratelimit-remaining-requests", requests),
        ("x-ratelimit-remaining-tokens", tokens),
    ] {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), value.into());
        }
    }
}

/// Anthropic's 529 `overloaded_error` is push-back, as OpenAI's 503 is.
pub fn map_status(status: StatusCode) -> StatusCode {
    match status.as_u16() {
        529 => StatusCode::SERVICE_UNAVAILABLE,
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers_and_overload_read_as_openais() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            "12".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-input-tokens-remaining",
            "900".parse().unwrap(),
        );
        headers.insert(
            "anthropic-ratelimit-output-tokens-remaining",
            "40".parse().unwrap(),
        );
        map_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-remaining-requests"], "12");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "40");
        assert_eq!(
            map_status(StatusCode::from_u16(529).unwrap()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            map_status(StatusCode::TOO_MANY_REQUESTS),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
