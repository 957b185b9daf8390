//! What a Realtime session and the stored-object routes read from a client
//! or an upstream: a server event's usage, a WebSocket handshake's headers
//! (and a key in a subprotocol), the model in a session's query, an API
//! path with any method, a JSON schema in a prompt, and a client event
//! sent to the mock's session. Property: none panics, and a usage read is
//! only ever from a `response.done`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::fuzzing::{
    MockSession, classify, presented_key, realtime_model, realtime_usage, schema_in,
    websocket_handshake,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if realtime_usage(&text).is_some() {
        assert!(text.contains("response.done"));
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
        headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        headers.insert(http::header::SEC_WEBSOCKET_VERSION, http::HeaderValue::from_static("13"));
        headers.insert(http::header::SEC_WEBSOCKET_KEY, value.clone());
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        if let Ok(handshake) = websocket_handshake(&headers) {
            let accepted = handshake.accept();
            // The key a browser sends in a subprotocol is never echoed.
            if let Some(protocol) = accepted.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL) {
                assert!(!protocol.as_bytes().starts_with(b"openai-insecure-api-key."));
            }
        }
        let _ = format!("{:?}", presented_key(&headers));
    }
    let _ = realtime_model(Some(&text));
    for method in [http::Method::GET, http::Method::POST, http::Method::DELETE] {
        let _ = classify(&method, &text);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = schema_in(&value);
    }
    let mut session = MockSession::new("gpt-realtime", data.first().is_some_and(|b| b % 2 == 0));
    use sluice::upstream::LocalSession;
    for event in session.on_client(&text) {
        assert!(serde_json::from_str::<serde_json::Value>(&event).is_ok());
    }
});
