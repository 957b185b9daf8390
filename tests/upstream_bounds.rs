//! Broken upstreams cannot hold a request, or the gateway's memory, beyond
//! its bounds: huge and dripping bodies, redirects, answers in the wrong
//! form, and stream lines that never end.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::gateway::{chat, deployment, error_of};
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;
use tokio::sync::Notify;

const KEY: &str = "sk-client-key-0001";

/// One deployment with a 5 s idle timeout under a 1 s request deadline and a
/// 1 MiB response limit; `server` adds `[server]` lines.
async fn gateway_for(upstream: &FakeUpstream, server: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[server]\nrequest_timeout = \"1s\"\nmax_response_bytes = 1048576\n{server}\n[retry]\nmax_attempts = 1\n{}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        deployment("oa", upstream, "timeout = \"5s\"")
    ))
    .await
}

fn stream_request() -> serde_json::Value {
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    body
}

/// Sends `body` and returns the response and how long its whole body took.
async fn timed(
    gateway: &TestGateway,
    body: &serde_json::Value,
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    String,
    Duration,
) {
    let started = Instant::now();
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (status, headers, text, started.elapsed())
}

fn error_code(text: &str) -> String {
    let body: serde_json::Value = serde_json::from_str(text).unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_huge_body_ends_in_a_bounded_502_quickly() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::Huge {
        status: 200,
        bytes: 1 << 30,
    });
    let gateway = gateway_for(&upstream, "").await;
    let (status, _, text, took) = timed(&gateway, &chat("gpt-4o")).await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(error_code(&text), "upstream_response_too_large");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        upstream.wait_stream_dropped(Duration::from_secs(2)).await,
        "the gateway stopped reading the upstream"
    );
}

#[tokio::test]
async fn a_declared_length_over_the_limit_fails_before_reading() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: "7".repeat(2 * 1024 * 1024),
    });
    let gateway = gateway_for(&upstream, "").await;
    let (status, _, text, _) = timed(&gateway, &chat("gpt-4o")).await;
    assert_eq!(status, 502);
    assert_eq!(error_code(&text), "upstream_response_too_large");
}

#[tokio::test]
async fn a_huge_error_body_is_cut_and_keeps_its_status() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::Huge {
        status: 400,
        bytes: 1 << 30,
    });
    let gateway = gateway_for(&upstream, "").await;
    let (status, _, text, took) = timed(&gateway, &chat("gpt-4o")).await;
    assert_eq!(status, 400);
    assert!(
        text.len() < 4096,
        "an excerpt, not the body: {}",
        text.len()
    );
    assert_eq!(error_code(&text), "upstream_error");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn a_dripping_body_ends_within_the_request_timeout() {
    for status in [200, 500] {
        let upstream = FakeUpstream::start("oa").await;
        upstream.push(Behavior::Drip {
            status,
            interval: Duration::from_millis(100),
        });
        let gateway = gateway_for(&upstream, "").await;
        let (answered, _, text, took) = timed(&gateway, &chat("gpt-4o")).await;
        assert!(
            took < Duration::from_millis(2500),
            "{status}: took {took:?}"
        );
        assert!(
            took >= Duration::from_millis(900),
            "{status}: took {took:?}"
        );
        if status == 200 {
            assert_eq!(answered, 504, "{text}");
            assert_eq!(error_code(&text), "upstream_timeout");
            let within = text.split("within ").nth(1).unwrap().split("ms").next();
            let within: u64 = within.unwrap().parse().unwrap();
            assert!(within >= 900, "the deadline, not the last wait: {text}");
        } else {
            // The upstream's own status, with what arrived of its body.
            assert_eq!(answered, 500, "{text}");
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("answered 500") && message.contains("xxx"),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn a_redirect_is_a_502_without_its_location() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::redirect(302, "https://elsewhere.example/v1"));
    let gateway = gateway_for(&upstream, "").await;
    for body in [chat("gpt-4o"), stream_request()] {
        let (status, headers, text, _) = timed(&gateway, &body).await;
        assert_eq!(status, 502, "{text}");
        assert!(!headers.contains_key("location"));
        assert!(!text.contains("elsewhere"), "{text}");
        assert!(text.contains("redirect"), "{text}");
        assert_eq!(error_code(&text), "upstream_error");
    }
    assert_eq!(upstream.calls(), 2, "never followed");
}

#[tokio::test]
async fn a_json_answer_to_a_stream_is_a_502() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway_for(&upstream, "").await;
    // The default echo answers JSON whatever was asked.
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 502);
    let error = error_of(response).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("application/json"),
        "{error:?}"
    );
}

#[tokio::test]
async fn once_a_stream_is_committed_a_wrong_answer_is_an_error_event() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway_for(&upstream, "stream_keepalive = \"100ms\"").await;
    for late in [
        Behavior::Echo,
        Behavior::redirect(307, "https://elsewhere.example/v1"),
    ] {
        upstream.push(Behavior::Late(Duration::from_millis(300), Box::new(late)));
        let (status, _, text, _) = timed(&gateway, &stream_request()).await;
        assert_eq!(status, 200);
        assert!(text.starts_with(": keep-alive"), "{text}");
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        assert!(
            last.starts_with("data: {\"error\"") && last.contains("upstream_error"),
            "{text}"
        );
        assert!(!text.contains("elsewhere") && !text.contains("[DONE]"));
    }
}

#[tokio::test]
async fn a_stream_line_without_end_passes_through_with_bounded_buffering() {
    let upstream = FakeUpstream::start("oa").await;
    let gate = Arc::new(Notify::new());
    let line = 4 * 1024 * 1024;
    upstream.push(Behavior::EndlessLine {
        bytes: line,
        gate: Some(gate.clone()),
    });
    let gateway = gateway_for(&upstream, "").await;
    // No include_usage: the gateway hides the usage it asked for, so the
    // filter that looks for whole lines is on this stream.
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::with_capacity(line + 1024);
    // While the upstream holds the line's end, all but a bounded carry of it
    // must already have reached the client.
    while received.len() < line - 64 * 1024 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("the gateway held the line back")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&chunk);
    }
    gate.notify_one();
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(received).unwrap();
    assert!(text.starts_with("data: {\"choices\":[{\"delta\":{\"content\":\"aaa"));
    assert!(
        text.ends_with("\"}}]}\n\ndata: [DONE]\n\n"),
        "{}",
        &text[text.len() - 64..]
    );
    let content = text.split("\"content\":\"").nth(1).unwrap();
    let content = content.split('"').next().unwrap();
    assert!(
        content.len() == line && content.bytes().all(|b| b == b'a'),
        "every byte, once"
    );
}
