//! The server side of a WebSocket handshake (RFC 6455), answered after the
//! deployment's session is open: the client's key turned into the accept
//! value, and a subprotocol chosen from those it offered, never the one
//! carrying its key (`openai-insecure-api-key.<key>`, which browsers use
//! because they cannot set a header).

use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::vocab::error::GatewayError;

use crate::engines::auth::KEY_PROTOCOL;
/// The subprotocol a browser asks for the beta API with.
const BETA_PROTOCOL: &str = "openai-beta.realtime-v1";

/// A checked upgrade request, ready to be accepted.
pub struct Handshake {
    accept: HeaderValue,
    protocol: Option<HeaderValue>,
    /// The client asked for the beta API with a subprotocol.
    pub beta_protocol: bool,
}

/// An HTTP/1.1 `GET` asking for a WebSocket, or `WebSocketRequired`.
pub fn check(headers: &HeaderMap) -> Result<Handshake, GatewayError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|text| {
                text.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    let version = headers.get(header::SEC_WEBSOCKET_VERSION);
    if !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
        || version.map(HeaderValue::as_bytes) != Some(b"13")
    {
        return Err(GatewayError::WebSocketRequired);
    }
    let key = key.ok_or(GatewayError::WebSocketRequired)?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| GatewayError::WebSocketRequired)?;
    let offered = offered_protocols(headers);
    let beta_protocol = offered.contains(&BETA_PROTOCOL);
    let protocol = offered
        .iter()
        .find(|protocol| **protocol == "realtime")
        .or_else(|| {
            offered
                .iter()
                .find(|protocol| !protocol.starts_with(KEY_PROTOCOL))
        })
        .and_then(|protocol| HeaderValue::from_str(protocol).ok());
    Ok(Handshake {
        accept,
        protocol,
        beta_protocol,
    })
}

/// The subprotocols a client offered, in its order.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .collect()
}

impl Handshake {
    /// The `101 Switching Protocols` answer.
    pub fn accept(self) -> Response {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        if let Some(protocol) = self.protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(protocols: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        if !protocols.is_empty() {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(protocols).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_and_the_key_protocol_is_never_chosen() {
        let handshake = check(&upgrade(
            "openai-insecure-api-key.sk-secret, realtime, openai-beta.realtime-v1",
        ))
        .unwrap();
        assert!(handshake.beta_protocol);
        let response = handshake.accept();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The RFC's own example.
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_PROTOCOL],
            "realtime"
        );
        let only_key = check(&upgrade("openai-insecure-api-key.sk-secret")).unwrap();
        assert!(
            only_key
                .accept()
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .is_none()
        );
    }

    #[test]
    fn a_plain_get_is_not_a_websocket() {
        assert!(check(&HeaderMap::new()).is_err());
        let mut old = upgrade("");
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(check(&old).is_err());
    }
}
