//! Realtime sessions with a deployment: a WebSocket to the provider (the
//! deployment's URL with `ws`/`wss`, its key in the header OpenAI or Azure
//! reads), or a session with a local provider (the mock), which answers
//! each client event with the server events it causes.

use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::provider::LocalSession;
use super::{Deployment, Endpoint, UpstreamError};

pub type RemoteSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The deployment's side of a session.
pub enum RealtimeUpstream {
    Remote(Box<RemoteSocket>),
    Local(Box<dyn LocalSession>),
}

/// What opening a session sends besides the deployment's key.
pub struct Opening<'a> {
    pub client_model: &'a str,
    /// The client's `OpenAI-Beta` (`realtime=v1` selects the beta API).
    pub beta: Option<&'a HeaderValue>,
    pub max_message_bytes: usize,
    pub timeout: Duration,
}

impl Deployment {
    /// Opens a Realtime session with this deployment.
    pub async fn open_realtime(
        &self,
        opening: Opening<'_>,
    ) -> Result<RealtimeUpstream, UpstreamError> {
        let upstream_model = self.upstream_model(opening.client_model);
        if let Some(local) = &self.local {
            let beta = opening
                .beta
                .is_some_and(|beta| beta.as_bytes().starts_with(b"realtime"));
            return local
                .realtime(upstream_model, beta)
                .map(RealtimeUpstream::Local)
                .ok_or_else(|| {
                    UpstreamError::Request("this deployment has no Realtime API".into())
                });
        }
        let url = self
            .uri(Endpoint::Realtime, upstream_model, None)
            .map_err(UpstreamError::Request)?;
        let url = websocket_url(&url.to_string());
        let mut request = url
            .into_client_request()
            .map_err(|error| UpstreamError::Request(error.to_string()))?;
        let headers = request.headers_mut();
        if let Some((name, value)) = &self.auth {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(beta) = opening.beta {
            headers.insert("openai-beta", beta.clone());
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(opening.max_message_bytes))
            .max_frame_size(Some(opening.max_message_bytes));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        match tokio::time::timeout(opening.timeout, connect).await {
            Err(_) => Err(UpstreamError::Connect(format!(
                "no WebSocket handshake within {:?}",
                opening.timeout
            ))),
            Ok(Err(error)) => Err(handshake_error(error)),
            Ok(Ok((socket, _))) => Ok(RealtimeUpstream::Remote(Box::new(socket))),
        }
    }
}

/// `https://` to `wss://`, `http://` to `ws://`.
fn websocket_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

/// A refused handshake keeps the provider's status; anything else is a
/// connection failure.
fn handshake_error(error: tokio_tungstenite::tungstenite::Error) -> UpstreamError {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => UpstreamError::Refused {
            status: response.status(),
            body: response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned())
                .unwrap_or_default(),
        },
        other => UpstreamError::Connect(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_become_websocket_urls() {
        assert_eq!(
            websocket_url("https://api.openai.com/v1/realtime?model=gpt-realtime"),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:9/v1/realtime"),
            "ws://127.0.0.1:9/v1/realtime"
        );
    }
}
