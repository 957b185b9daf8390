//! The auth stage: `Authorization: Bearer <key>` (OpenAI SDKs) or
//! `api-key: <key>` (Azure-style clients), behind the per-address throttle
//! of failed attempts.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::{FailedAuth, Identity, KeyStore};
use crate::infra::metrics::Metrics;
use crate::vocab::error::GatewayError;

/// What a request presents as its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Absent,
    Key(&'a str),
    /// A header that cannot be a key (bytes outside visible ASCII): refused,
    /// never taken as "no key".
    Malformed,
}

/// On responses refused by authentication: the access log keeps them at
/// debug level (the auth guard logs them in the aggregate).
#[derive(Clone, Copy, Debug)]
pub struct AuthRefused;

/// The throttle and the count of refused attempts, shared by the API and
/// the admin routes.
#[derive(Clone)]
pub struct AuthGuard {
    pub throttle: Option<Arc<FailedAuth>>,
    pub metrics: Metrics,
}

impl AuthGuard {
    /// 429 when the caller's address has used up its failed attempts.
    pub fn admit(&self, request: &Request) -> Result<(), Box<Response>> {
        let (Some(throttle), Some(address)) = (&self.throttle, client_address(request)) else {
            return Ok(());
        };
        match throttle.wait(address) {
            None => Ok(()),
            Some(retry_after) => {
                throttle.log_aggregated(address, "throttled", "-");
                Err(Box::new(self.refusal(
                    "throttled",
                    GatewayError::AuthThrottled { retry_after }.into_response(),
                )))
            }
        }
    }

    /// Counts a refused credential against the caller's address.
    pub fn refuse(&self, request: &Request, error: GatewayError) -> Response {
        let (reason, masked) = match &error {
            GatewayError::InvalidApiKey { masked } => ("invalid_key", masked.as_str()),
            _ => ("missing_key", "-"),
        };
        if let (Some(throttle), Some(address)) = (&self.throttle, client_address(request)) {
            throttle.failed(address, reason, masked);
        }
        self.refusal(reason, error.into_response())
    }

    fn refusal(&self, reason: &str, mut response: Response) -> Response {
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        response.extensions_mut().insert(AuthRefused);
        response
    }
}

fn client_address(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Resolves the presented key to an `Identity`.
#[derive(Clone)]
pub struct Authenticate {
    pub keys: Arc<KeyStore>,
    pub guard: AuthGuard,
}

impl Authenticate {
    /// The caller, or the refusal (401, or 429 when throttled).
    pub fn identity(&self, request: &Request) -> Result<Arc<Identity>, Box<Response>> {
        self.guard.admit(request)?;
        self.keys
            .resolve(presented_key(request.headers()))
            .map_err(|error| Box::new(self.guard.refuse(request, error)))
    }
}

/// The WebSocket subprotocol prefix that carries a browser's key (a
/// browser cannot set a header on a WebSocket; OpenAI's Realtime API takes
/// the key this way).
pub const KEY_PROTOCOL: &str = "openai-insecure-api-key.";

/// The key from `Authorization: Bearer <key>` (any case of `Bearer`, or
/// none), from `api-key` (Azure's clients) or `x-api-key` (Anthropic's),
/// or from a WebSocket's `openai-insecure-api-key.`
/// subprotocol, trimmed; `Absent` when none is sent or it is empty.
pub fn presented_key(headers: &HeaderMap) -> Presented<'_> {
    let (value, bearer) = match headers.get(header::AUTHORIZATION) {
        Some(value) => (value, true),
        None => match headers.get("api-key").or_else(|| headers.get("x-api-key")) {
            Some(value) => (value, false),
            None => return protocol_key(headers),
        },
    };
    let Ok(text) = value.to_str() else {
        return Presented::Malformed;
    };
    let text = text.trim();
    let token = match text.split_once(' ') {
        Some((scheme, rest)) if bearer && scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        None if bearer && text.eq_ignore_ascii_case("bearer") => "",
        _ => text,
    };
    match token {
        "" => Presented::Absent,
        token if token.bytes().all(|b| b.is_ascii_graphic()) => Presented::Key(token),
        _ => Presented::Malformed,
    }
}

/// A key a browser sent as a WebSocket subprotocol.
fn protocol_key(headers: &HeaderMap) -> Presented<'_> {
    let mut malformed = false;
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(text) = value.to_str() else {
            malformed = true;
            continue;
        };
        if let Some(key) = text
            .split(',')
            .find_map(|protocol| protocol.trim().strip_prefix(KEY_PROTOCOL))
        {
            return match key {
                "" => Presented::Absent,
                key if key.bytes().all(|b| b.is_ascii_graphic()) => Presented::Key(key),
                _ => Presented::Malformed,
            };
        }
    }
    if malformed {
        Presented::Malformed
    } else {
        Presented::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &'static str, value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, http::HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn reads_bearer_and_api_key_and_refuses_what_cannot_be_a_key() {
        /// What `presented_key` makes of one header, as text.
        fn read(name: &'static str, value: &[u8]) -> String {
            format!("{:?}", presented_key(&headers(name, value)))
        }
        let auth = |value: &[u8]| read("authorization", value);
        assert_eq!(auth(b"Bearer sk-abc"), r#"Key("sk-abc")"#);
        assert_eq!(auth(b"bearer  sk-abc "), r#"Key("sk-abc")"#);
        assert_eq!(auth(b"sk-abc"), r#"Key("sk-abc")"#);
        assert_eq!(auth(b"Bearer "), "Absent");
        assert_eq!(auth(b"Bearer sk-\xc3\xa9"), "Malformed");
        assert_eq!(auth(b"Bearer sk a"), "Malformed");
        assert_eq!(auth(b"Bearer sk-\ta"), "Malformed");
        assert_eq!(read("api-key", b"sk-xyz"), r#"Key("sk-xyz")"#);
        assert_eq!(read("x-api-key", b"sk-xyz"), r#"Key("sk-xyz")"#);
        assert_eq!(
            read(
                "sec-websocket-protocol",
                b"realtime, openai-insecure-api-key.sk-abc, openai-beta.realtime-v1"
            ),
            r#"Key("sk-abc")"#
        );
        assert_eq!(read("sec-websocket-protocol", b"realtime"), "Absent");
        assert_eq!(read("api-key", b"\xff\xfe"), "Malformed");
        assert_eq!(presented_key(&HeaderMap::new()), Presented::Absent);
    }
}
