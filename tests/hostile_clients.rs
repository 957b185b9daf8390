//! A hostile client gets short answers: echoes of its input are clipped,
//! oversized ids and tags are not trusted, malformed or wrong keys are
//! refused and throttled per address, and a refusal keeps the connection
//! usable.
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

use std::time::Duration;

use common::gateway::{chat, deployment, error_of};
use common::{Behavior, FakeUpstream, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-client-key-0001";

async fn gateway(extra: &str) -> (FakeUpstream, TestGateway) {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{extra}\n{}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        deployment("oa", &upstream, "")
    ))
    .await;
    (upstream, gateway)
}

#[tokio::test]
async fn errors_quote_a_short_prefix_of_what_the_client_sent() {
    let (upstream, gateway) = gateway("").await;
    let huge = "m".repeat(2 << 20);
    // A body that is not an object is named by its type, not quoted.
    let cases = [
        (serde_json::json!(huge), "but got a string instead"),
        (
            serde_json::json!({"model": huge, "messages": []}),
            "bytes, cut",
        ),
    ];
    for (body, says) in cases {
        let response = gateway.post("/v1/chat/completions", Some(KEY), &body).await;
        assert!(response.status().is_client_error());
        let text = response.text().await.unwrap();
        assert!(text.len() < 1024, "an error of {} bytes", text.len());
        assert!(text.contains(says), "{text}");
    }
    let path = format!("/v1/{}", "p".repeat(60_000));
    let response = gateway.client.get(gateway.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().len() < 1024);
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn only_short_printable_request_ids_are_trusted_and_the_upstreams_is_passed_on() {
    let (upstream, gateway) = gateway("").await;
    upstream.set_default(Behavior::Reply {
        status: 200,
        headers: vec![("x-request-id", "upstream-req-77".into())],
        body: r#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.into(),
    });
    let send = |id: String| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-request-id", id)
            .json(&chat("gpt-4o"))
            .send()
    };
    let kept = send("client-id-1".into()).await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "client-id-1");
    assert_eq!(kept.headers()["x-upstream-request-id"], "upstream-req-77");
    assert_eq!(upstream.last().headers["x-request-id"], "client-id-1");

    let long = "a".repeat(80_000);
    let replaced = send(long.clone()).await.unwrap();
    let id = replaced.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_") && id.len() <= 128, "{id}");
    assert_eq!(upstream.last().headers["x-request-id"], id.as_str());
}

/// Sends raw header bytes (which reqwest refuses to send) and returns the status.
async fn raw_status(gateway: &TestGateway, request: &[u8]) -> u16 {
    let mut socket = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut head = vec![0; 12];
    socket.read_exact(&mut head).await.unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_malformed_credential_is_refused_even_when_keys_are_optional() {
    let (upstream, gateway) = gateway("[auth]\nrequired = false").await;
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    let request = |auth: &[u8]| {
        let mut request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(auth);
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body.as_bytes());
        request
    };
    assert_eq!(
        raw_status(
            &gateway,
            &request(b"authorization: Bearer sk-\xc3\xa9t\xc3\xa9")
        )
        .await,
        401
    );
    assert_eq!(
        raw_status(&gateway, &request(b"api-key: \xff\xfe")).await,
        401
    );
    assert_eq!(upstream.calls(), 0);
    // No credential at all is still anonymous here.
    assert_eq!(raw_status(&gateway, &request(b"x-other: 1")).await, 200);
}

#[tokio::test]
async fn failed_attempts_are_throttled_per_address() {
    let (upstream, gateway) = gateway("[auth]\nfailed_auth_per_minute = 5").await;
    for _ in 0..5 {
        let response = gateway
            .post(
                "/v1/chat/completions",
                Some("sk-guess-0000000"),
                &chat("gpt-4o"),
            )
            .await;
        assert_eq!(response.status(), 401);
    }
    let refused = gateway
        .post(
            "/v1/chat/completions",
            Some("sk-guess-0000001"),
            &chat("gpt-4o"),
        )
        .await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&wait), "retry-after {wait}");
    let error = error_of(refused).await;
    assert_eq!(error["code"], "too_many_failed_attempts");
    // While the bucket is empty the address gets no more guesses, right or wrong.
    let valid = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    assert_eq!(valid.status(), 429);
    assert_eq!(upstream.calls(), 0);
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_auth_failures_total{reason="invalid_key"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sluice_auth_failures_total{reason="throttled"} 2"#));
}

#[tokio::test]
async fn a_refused_request_keeps_its_keep_alive_connection() {
    let (_upstream, gateway) = gateway("").await;
    let body = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "x".repeat(32 * 1024));
    let mut socket = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    for round in 0..5 {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-wrong-key-{round:04}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut socket).await;
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "round {round}: {response}"
        );
        assert!(!response.to_ascii_lowercase().contains("connection: close"));
    }
}

/// Reads one response with a content-length body from a keep-alive socket.
async fn read_response(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(
            read > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_stream_nested_too_deep_to_parse_is_still_metered() {
    let (upstream, gateway) = gateway("").await;
    let usage = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n";
    upstream.push(Behavior::Stream {
        events: vec![
            common::fake_upstream::chunk("hi"),
            usage.into(),
            common::fake_upstream::done(),
        ],
        interval: Duration::from_millis(1),
        gate: None,
    });
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let body = format!(
        r#"{{"model":"gpt-4o","stream":true,"messages":[{{"role":"user","content":"hi"}}],"tools":{deep}}}"#
    );
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("[DONE]") && !text.contains("\"usage\""),
        "{text}"
    );
    let sent = String::from_utf8(upstream.last().raw.to_vec()).unwrap();
    assert!(sent.contains(r#""stream_options":{"include_usage":true}"#));
    assert!(
        sent.ends_with(&format!("{deep}}}")),
        "the rest is forwarded as sent"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_tokens_total{deployment="oa",model="gpt-4o",type="prompt"} 9"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("tokens_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
