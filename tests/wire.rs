//! Requests and answers on the wire: typed 400s, compressed bodies both
//! ways, CORS for browsers, and a stream's end (and how) in the metrics.
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

use std::io::{Read, Write};
use std::time::Duration;

use common::fake_upstream::{chunk, done};
use common::gateway::{chat, deployment, error_of};
use common::{Behavior, FakeUpstream, TestGateway};

const KEY: &str = "sk-wire-key-000001";

async fn gateway_with(server: &str) -> (FakeUpstream, TestGateway) {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[server]\n{server}\n{}\n[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        deployment("oa", &upstream, "")
    ))
    .await;
    (upstream, gateway)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// POSTs raw bytes to the chat endpoint with extra headers.
async fn post_raw(
    gateway: &TestGateway,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_named_with_openais_wording() {
    let (upstream, gateway) = gateway_with("").await;
    let cases = [
        (
            r#"{"model":"gpt-4o","messages":[],"stream":"yes"}"#,
            Some("stream"),
            "Invalid type for 'stream': expected a boolean, but got a string instead.",
        ),
        (
            r#"{"model":5,"messages":[]}"#,
            Some("model"),
            "Invalid type for 'model': expected a string, but got an integer instead.",
        ),
        (
            "null",
            None,
            "Invalid type for the request body: expected an object, but got null instead.",
        ),
    ];
    for (body, param, message) in cases {
        let response = post_raw(&gateway, body.into(), &[]).await;
        assert_eq!(response.status(), 400, "{body}");
        let error = error_of(response).await;
        assert_eq!(error["message"], message);
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"].as_str(), param);
        assert_eq!(error["code"], "invalid_type");
    }
    let response = post_raw(&gateway, br#"{"model": "gpt-4o","#.to_vec(), &[]).await;
    assert_eq!(response.status(), 400);
    let error = error_of(response).await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("We could not parse the JSON body"),
        "{message}"
    );
    assert!(!message.contains("RawHead") && !message.contains("struct"));
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn compressed_request_bodies_are_forwarded_decoded() {
    let (upstream, gateway) = gateway_with("").await;
    let body = serde_json::to_vec(&chat("gpt-4o")).unwrap();
    for spelling in ["gzip", " GZip "] {
        let response = post_raw(&gateway, gzip(&body), &[("content-encoding", spelling)]).await;
        assert_eq!(response.status(), 200, "{spelling}");
        let sent = upstream.last();
        assert_eq!(sent.raw, body, "the upstream gets the decoded bytes");
        assert!(sent.headers.get("content-encoding").is_none());
    }
    let response = post_raw(&gateway, body.clone(), &[("content-encoding", "identity")]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_body_limit_counts_decoded_bytes() {
    let (upstream, gateway) = gateway_with("max_body_bytes = 65536").await;
    let bomb = format!(r#"{{"model":"gpt-4o","pad":"{}"}}"#, "0".repeat(16 << 20));
    let packed = gzip(bomb.as_bytes());
    assert!(packed.len() < 65536, "{} bytes", packed.len());
    let response = post_raw(&gateway, packed, &[("content-encoding", "gzip")]).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_of(response).await["code"], "request_too_large");
    let response = post_raw(
        &gateway,
        b"not gzip".to_vec(),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(response.status(), 400);
    error_of(response).await;
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn an_unknown_encoding_is_415() {
    let (upstream, gateway) = gateway_with("").await;
    let body = serde_json::to_vec(&chat("gpt-4o")).unwrap();
    let response = post_raw(&gateway, body, &[("content-encoding", "compress")]).await;
    assert_eq!(response.status(), 415);
    let error = error_of(response).await;
    assert_eq!(error["code"], "unsupported_content_encoding");
    assert!(error["message"].as_str().unwrap().contains("compress"));
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn large_json_answers_are_compressed_streams_never() {
    let (upstream, gateway) = gateway_with("").await;
    let answer =
        serde_json::json!({"id": "x", "object": "chat.completion", "pad": "y".repeat(4000)});
    let reply = Behavior::Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: answer.to_string(),
    };
    let body = serde_json::to_vec(&chat("gpt-4o")).unwrap();
    upstream.push(reply.clone());
    let response = post_raw(&gateway, body.clone(), &[("accept-encoding", "gzip")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.len() < 1000, "{} bytes", bytes.len());
    let decoded: serde_json::Value = serde_json::from_slice(&gunzip(&bytes)).unwrap();
    assert_eq!(decoded, answer);

    upstream.push(reply);
    let response = post_raw(&gateway, body, &[]).await;
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), answer);

    upstream.push(Behavior::Stream {
        events: vec![chunk(&"z".repeat(3000)), done()],
        interval: Duration::from_millis(1),
        gate: None,
    });
    let mut streamed = chat("gpt-4o");
    streamed["stream"] = true.into();
    let response = post_raw(
        &gateway,
        serde_json::to_vec(&streamed).unwrap(),
        &[("accept-encoding", "gzip, br, zstd")],
    )
    .await;
    assert!(response.headers().get("content-encoding").is_none());
    assert!(response.text().await.unwrap().contains("[DONE]"));
}

async fn preflight(gateway: &TestGateway, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            gateway.url("/v1/chat/completions"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-stainless-os,x-stainless-retry-count",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins() {
    let (_upstream, gateway) = gateway_with(r#"cors_origins = ["https://app.example"]"#).await;
    let response = preflight(&gateway, "https://app.example").await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    for name in ["authorization", "content-type", "x-stainless-os", "api-key"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let response = preflight(&gateway, "https://evil.example").await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let response = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("origin", "https://app.example")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for name in [
        "x-request-id",
        "x-sluice-deployment",
        "x-ratelimit-remaining-tokens",
        "retry-after-ms",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
}

#[tokio::test]
async fn without_origins_there_are_no_cors_headers() {
    let (_upstream, gateway) = gateway_with("").await;
    let response = preflight(&gateway, "https://app.example").await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let (_upstream, gateway) = gateway_with(r#"cors_origins = ["*"]"#).await;
    let response = preflight(&gateway, "https://any.example").await;
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[test]
fn an_origin_with_a_path_is_refused_at_start_up() {
    let config = r#"
        [server]
        cors_origins = ["https://app.example/"]
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "http://127.0.0.1:9"
        models = ["gpt-4o"]
    "#;
    let Err(error) = sluice::config::load_from_str(config, "test", &Default::default()) else {
        panic!("an origin with a path was accepted");
    };
    assert!(error.to_string().contains("cors_origins[0]"), "{error}");
}

/// The count of `sluice_streams_total{outcome}`, waiting up to 5 s for it to
/// reach `want` (a stream's end is counted when its relay is dropped).
async fn streams_reach(gateway: &TestGateway, outcome: &str, want: u64) -> u64 {
    let series = format!("sluice_streams_total{{outcome=\"{outcome}\"}} ");
    let mut seen = 0;
    for _ in 0..100 {
        let metrics = gateway.metrics().await;
        seen = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().unwrap());
        if seen >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

#[tokio::test]
async fn streams_are_counted_by_how_they_ended() {
    let (upstream, gateway) = gateway_with("").await;
    let mut streamed = chat("gpt-4o");
    streamed["stream"] = true.into();
    let body = serde_json::to_vec(&streamed).unwrap();

    upstream.push(Behavior::Stream {
        events: vec![chunk("hi"), done()],
        interval: Duration::from_millis(1),
        gate: None,
    });
    let response = post_raw(&gateway, body.clone(), &[]).await;
    assert!(response.text().await.unwrap().contains("[DONE]"));
    assert_eq!(streams_reach(&gateway, "completed", 1).await, 1);

    upstream.push(Behavior::Endless);
    let response = post_raw(&gateway, body.clone(), &[]).await;
    let mut stream = response.bytes_stream();
    use futures_util::StreamExt;
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    assert_eq!(streams_reach(&gateway, "client_closed", 1).await, 1);

    upstream.push(Behavior::BreakAfter(vec![chunk("hi")]));
    let response = post_raw(&gateway, body, &[]).await;
    assert!(response.text().await.unwrap().contains("\"error\""));
    assert_eq!(streams_reach(&gateway, "upstream_error", 1).await, 1);
    assert_eq!(
        streams_reach(&gateway, "completed", 1).await,
        1,
        "counted once"
    );
}
