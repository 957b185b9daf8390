//! Realtime sessions through the gateway, against a fake Realtime upstream
//! on a real socket (a WebSocket server that records each handshake and
//! can refuse it, close with its own code or drop the connection): the
//! virtual key in a header or a browser's subprotocol, the provider's key
//! to the upstream, failover before the client is answered, usage from
//! `response.done` in the ledger, the per-key cap, and each way a session
//! ends with its own close code.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestGateway;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const KEY: &str = "sk-realtime-client-01";
const ADMIN: &str = "admin-token-0123456789";

/// What a fake upstream does with a session.
#[derive(Clone, Copy)]
enum Script {
    /// `session.created`, then a `response.done` (20 in, 10 out, 5 cached)
    /// for each `response.create`; anything else is echoed.
    Serve,
    /// The handshake is refused with this status.
    Refuse(u16),
    /// The first client message is answered with a close frame, code 4001.
    CloseAfterFirst,
    /// The first client message makes it drop the connection, no close.
    DropAfterFirst,
}

/// A recorded handshake: the path with its query, and the headers.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    authorization: Option<String>,
    beta: Option<String>,
}

struct FakeRealtime {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeRealtime {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(session(tcp, script, record.clone()));
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[allow(
    clippy::result_large_err,
    reason = "tungstenite's handshake callback returns its own error response"
)]
async fn session(tcp: tokio::net::TcpStream, script: Script, seen: Arc<Mutex<Vec<Seen>>>) {
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        seen.lock().unwrap().push(Seen {
            uri: request.uri().to_string(),
            authorization: header("authorization"),
            beta: header("openai-beta"),
        });
        match script {
            Script::Refuse(status) => {
                let mut refusal =
                    ErrorResponse::new(Some(r#"{"error":{"message":"busy"}}"#.into()));
                *refusal.status_mut() = http::StatusCode::from_u16(status).unwrap();
                Err(refusal)
            }
            _ => Ok(response),
        }
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let created = json!({"type": "session.created", "event_id": "e0", "session": {"id": "sess_1"}});
    socket
        .send(Message::text(created.to_string()))
        .await
        .unwrap();
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        match script {
            Script::CloseAfterFirst => {
                let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "custom reason".into(),
                };
                let _ = socket.close(Some(frame)).await;
                return;
            }
            Script::DropAfterFirst => return,
            _ => {}
        }
        let event: Value = serde_json::from_str(&text).unwrap();
        let reply = if event["type"] == "response.create" {
            json!({"type": "response.done", "event_id": "e1", "response": {"id": "resp_1", "status": "completed",
                "usage": {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10,
                          "input_token_details": {"cached_tokens": 5, "text_tokens": 15, "audio_tokens": 5},
                          "output_token_details": {"text_tokens": 10, "audio_tokens": 0}}}})
        } else {
            event
        };
        if socket.send(Message::text(reply.to_string())).await.is_err() {
            return;
        }
    }
}

fn deployment(name: &str, upstream: &FakeRealtime, priority: i32) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nprovider = \"openai\"\nbase_url = \"{}\"\napi_key = \"sk-upstream-{name}\"\nmodels = [\"gpt-realtime\"]\npriority = {priority}\n",
        upstream.url
    )
}

fn config(deployments: &str, extra: &str) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-realtime-{}", fastrand::u64(..)));
    let toml = format!(
        "[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"20ms\"\n[admin]\ntoken = \"{ADMIN}\"\n\
         [pricing.\"gpt-realtime\"]\ninput_per_1m = 4.0\noutput_per_1m = 16.0\ncached_input_per_1m = 0.4\n\
         {extra}\n{deployments}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        dir.display()
    );
    (toml, dir)
}

fn ws_url(gateway: &TestGateway, query: &str) -> String {
    gateway
        .url(&format!("/v1/realtime?{query}"))
        .replacen("http://", "ws://", 1)
}

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a session with `headers`; the handshake's result.
async fn open(url: &str, headers: &[(&str, &str)]) -> Result<(Client, http::HeaderMap), WsError> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request
            .headers_mut()
            .insert(name, http::HeaderValue::from_str(value).unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, response)| (socket, response.headers().clone()))
}

/// The next text event, parsed.
async fn next_event(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("an event within 5 s")
            .expect("the session is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// The close frame the gateway ends the session with.
async fn close_frame(client: &mut Client) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("a close within 5 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("no close frame: {error}"),
        }
    }
}

async fn ledger_row(gateway: &TestGateway) -> Value {
    for _ in 0..100 {
        let totals = gateway
            .get_json("/admin/usage?group_by=key", Some(ADMIN))
            .await;
        if let Some(row) = totals["data"].as_array().and_then(|rows| rows.first()) {
            return row.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no ledger row");
}

#[tokio::test]
async fn a_session_fails_over_before_answering_and_is_metered_from_its_responses() {
    let refusing = FakeRealtime::start(Script::Refuse(503)).await;
    let serving = FakeRealtime::start(Script::Serve).await;
    let deployments = deployment("first", &refusing, 0) + &deployment("second", &serving, 1);
    let (toml, dir) = config(&deployments, "");
    let gateway = TestGateway::start(&toml).await;

    let bearer = format!("Bearer {KEY}");
    let (mut client, headers) = open(
        &ws_url(&gateway, "model=gpt-realtime"),
        &[("authorization", &bearer), ("openai-beta", "realtime=v1")],
    )
    .await
    .unwrap();
    assert!(headers.get("sec-websocket-protocol").is_none());
    assert_eq!(next_event(&mut client).await["type"], "session.created");
    for _ in 0..2 {
        client
            .send(Message::text(r#"{"type":"response.create"}"#))
            .await
            .unwrap();
        assert_eq!(next_event(&mut client).await["type"], "response.done");
    }
    // Anything else passes through unchanged.
    let update = r#"{"type":"session.update","session":{"instructions":"x"}}"#;
    client.send(Message::text(update)).await.unwrap();
    assert_eq!(
        next_event(&mut client).await["session"]["instructions"],
        "x"
    );
    client.close(None).await.unwrap();

    // Each upstream saw the provider's key, never the client's.
    for (upstream, name) in [(&refusing, "first"), (&serving, "second")] {
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1, "{name}: {seen:?}");
        assert_eq!(seen[0].uri, "/v1/realtime?model=gpt-realtime");
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some(format!("Bearer sk-upstream-{name}").as_str())
        );
        assert_eq!(seen[0].beta.as_deref(), Some("realtime=v1"));
    }
    // One ledger record for the session, with both responses' tokens.
    let row = ledger_row(&gateway).await;
    assert_eq!(row["requests"], 1);
    assert_eq!(row["prompt_tokens"], 40);
    assert_eq!(row["completion_tokens"], 20);
    assert_eq!(row["cached_tokens"], 10);
    let cost = row["cost_usd"].as_f64().unwrap();
    let expected = (30.0 * 4.0 + 10.0 * 0.4 + 20.0 * 16.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_browser_authenticates_with_its_subprotocol_and_a_bad_key_is_refused() {
    let serving = FakeRealtime::start(Script::Serve).await;
    let (toml, dir) = config(&deployment("only", &serving, 0), "");
    let gateway = TestGateway::start(&toml).await;
    let url = ws_url(&gateway, "model=gpt-realtime");

    let protocols = format!("realtime, openai-insecure-api-key.{KEY}, openai-beta.realtime-v1");
    let (mut client, headers) = open(&url, &[("sec-websocket-protocol", &protocols)])
        .await
        .unwrap();
    assert_eq!(headers["sec-websocket-protocol"], "realtime");
    assert_eq!(next_event(&mut client).await["type"], "session.created");
    client.close(None).await.unwrap();
    // The beta subprotocol is the beta header upstream; no key goes on.
    assert_eq!(serving.seen()[0].beta.as_deref(), Some("realtime=v1"));
    assert_eq!(
        serving.seen()[0].authorization.as_deref(),
        Some("Bearer sk-upstream-only")
    );

    let wrong = "realtime, openai-insecure-api-key.sk-wrong-key-000";
    match open(&url, &[("sec-websocket-protocol", wrong)]).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "invalid_api_key");
            assert!(!body.to_string().contains("sk-wrong-key-000"), "{body}");
        }
        other => panic!("a wrong key must be refused: {:?}", other.map(|_| ())),
    }
    // A plain GET is not a session.
    let plain = gateway
        .client
        .get(gateway.url("/v1/realtime?model=gpt-realtime"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    assert_eq!(
        plain.json::<Value>().await.unwrap()["error"]["code"],
        "websocket_required"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_keys_sessions_are_capped_and_the_slot_comes_back_at_the_close() {
    let serving = FakeRealtime::start(Script::Serve).await;
    let (toml, dir) = config(
        &deployment("only", &serving, 0),
        "[realtime]\nmax_sessions_per_key = 1",
    );
    let gateway = TestGateway::start(&toml).await;
    let url = ws_url(&gateway, "model=gpt-realtime");
    let bearer = format!("Bearer {KEY}");
    let headers = [("authorization", bearer.as_str())];

    let (mut first, _) = open(&url, &headers).await.unwrap();
    assert_eq!(next_event(&mut first).await["type"], "session.created");
    match open(&url, &headers).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_sessions");
        }
        other => panic!("a second session must be refused: {:?}", other.map(|_| ())),
    }
    first.close(None).await.unwrap();
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok((socket, _)) = open(&url, &headers).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = reopened.expect("the slot is free once the first session closed");
    assert_eq!(next_event(&mut again).await["type"], "session.created");
    // An unknown model is refused before any upgrade.
    match open(&ws_url(&gateway, "model=nope"), &headers).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A session on a gateway in front of one upstream playing `script`, with
/// `extra` config, past its `session.created`; the temporary directory.
async fn session_on(script: Script, extra: &str) -> (Client, TestGateway, std::path::PathBuf) {
    let upstream = FakeRealtime::start(script).await;
    let (toml, dir) = config(&deployment("only", &upstream, 0), extra);
    let gateway = TestGateway::start(&toml).await;
    let bearer = format!("Bearer {KEY}");
    let (mut client, _) = open(
        &ws_url(&gateway, "model=gpt-realtime"),
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    next_event(&mut client).await;
    (client, gateway, dir)
}

#[tokio::test]
async fn each_way_a_session_ends_has_its_close_code() {
    // The upstream's own close frame goes on unchanged; one that drops the
    // connection is 1011.
    for (script, expected) in [
        (Script::CloseAfterFirst, (4001, "custom reason")),
        (Script::DropAfterFirst, (1011, "upstream connection failed")),
    ] {
        let (mut client, _gateway, dir) = session_on(script, "").await;
        client.send(Message::text("{}")).await.unwrap();
        let (code, reason) = close_frame(&mut client).await;
        assert_eq!((code, reason.as_str()), expected);
        let _ = std::fs::remove_dir_all(dir);
    }

    // Idle past `idle_timeout`: 1000, and why.
    let (mut client, _gateway, dir) =
        session_on(Script::Serve, "[realtime]\nidle_timeout = \"300ms\"").await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, 1000);
    assert!(reason.contains("idle"), "{reason}");
    let _ = std::fs::remove_dir_all(dir);

    // Past `max_session`, however busy.
    let (mut client, _gateway, dir) =
        session_on(Script::Serve, "[realtime]\nmax_session = \"400ms\"").await;
    let busy = async {
        loop {
            let ping = Message::text(r#"{"type":"ping"}"#);
            if client.send(ping).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), busy).await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, 1000);
    assert!(reason.contains("limit"), "{reason}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_mock_serves_a_session_and_client_secrets() {
    let dir = std::env::temp_dir().join(format!("sluice-realtime-{}", fastrand::u64(..)));
    let toml = format!(
        "[usage]\nstore = \"none\"\ndata_dir = \"{}\"\n[[deployments]]\nname = \"mock\"\nprovider = \"mock\"\nmodels = [\"gpt-realtime\"]\n[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        dir.display()
    );
    let gateway = TestGateway::start(&toml).await;
    let bearer = format!("Bearer {KEY}");
    let (mut client, _) = open(
        &ws_url(&gateway, "model=gpt-realtime"),
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut client).await["type"], "session.created");
    let item = json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hello there"}]}});
    client.send(Message::text(item.to_string())).await.unwrap();
    assert_eq!(
        next_event(&mut client).await["type"],
        "conversation.item.added"
    );
    client
        .send(Message::text(r#"{"type":"response.create"}"#))
        .await
        .unwrap();
    let mut text = String::new();
    loop {
        let event = next_event(&mut client).await;
        match event["type"].as_str().unwrap() {
            "response.output_text.delta" => text.push_str(event["delta"].as_str().unwrap()),
            "response.done" => {
                let usage = &event["response"]["usage"];
                assert!(usage["input_tokens"].as_u64().unwrap() > 0);
                assert!(usage["output_tokens"].as_u64().unwrap() > 0);
                break;
            }
            _ => {}
        }
    }
    assert!(!text.is_empty());
    client.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_event(&mut client).await["type"], "error");

    let secret: Value = gateway
        .post(
            "/v1/realtime/client_secrets",
            Some(KEY),
            &json!({"session": {"type": "realtime", "model": "gpt-realtime"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        secret["value"].as_str().unwrap().starts_with("ek_"),
        "{secret}"
    );
    assert_eq!(secret["session"]["model"], "gpt-realtime");
    let _ = std::fs::remove_dir_all(dir);
}
