//! SSE passthrough: chunk-by-chunk relay, cancellation, keep-alives, and
//! errors before and during a stream.
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

use common::fake_upstream::{chunk, done};
use common::gateway::{chat, error_of};
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;

const KEY: &str = "sk-client-key-0001";

async fn gateway_for(upstream: &FakeUpstream, keepalive: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
        [retry]
        max_attempts = 1
        [server]
        stream_keepalive = "{keepalive}"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}"
        models = ["gpt-4o"]
        timeout = "10s"
        [[keys]]
        name = "app"
        key = "{KEY}"
        "#,
        upstream.base_url()
    ))
    .await
}

fn stream_request() -> serde_json::Value {
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    body
}

/// Reads the next non-empty body chunk within a bound.
async fn next_text(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Option<String> {
    let item = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the gateway stalled")?;
    Some(String::from_utf8(item.unwrap().to_vec()).unwrap())
}

#[tokio::test]
async fn first_chunk_arrives_while_upstream_is_still_generating() {
    let upstream = FakeUpstream::start("oa").await;
    let gate = upstream.push_gated_stream(vec![chunk("Hel"), chunk("lo"), done()]);
    let gateway = gateway_for(&upstream, "15s").await;
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    // The upstream holds every later event until the gate opens, so this
    // chunk can only have arrived by being relayed as it was sent.
    let first = next_text(&mut body).await.unwrap();
    assert_eq!(first, chunk("Hel"));
    gate.notify_one();
    let mut rest = String::new();
    while let Some(text) = next_text(&mut body).await {
        rest.push_str(&text);
    }
    assert_eq!(
        rest,
        chunk("lo") + &done(),
        "events pass through byte for byte, in order"
    );
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_stream() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::Endless);
    let gateway = gateway_for(&upstream, "15s").await;
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    let mut body = response.bytes_stream();
    assert!(
        next_text(&mut body)
            .await
            .unwrap()
            .starts_with("data: {\"n\":0}")
    );
    drop(body);
    assert!(
        upstream.wait_stream_dropped(Duration::from_secs(5)).await,
        "the upstream kept streaming after the client left"
    );
}

#[tokio::test]
async fn keepalives_flow_until_the_first_upstream_byte() {
    let upstream = FakeUpstream::start("oa").await;
    let gate =
        upstream.push_gated_stream(vec![": upstream-start\n\n".into(), chunk("late"), done()]);
    // A slow first token: the upstream answers headers but holds the content.
    let gateway = gateway_for(&upstream, "50ms").await;
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    let mut body = response.bytes_stream();
    assert_eq!(next_text(&mut body).await.unwrap(), ": upstream-start\n\n");
    // After the first upstream byte no keep-alive is added.
    let opener = tokio::spawn({
        let gate = gate.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            gate.notify_one();
        }
    });
    let mut rest = String::new();
    while let Some(text) = next_text(&mut body).await {
        rest.push_str(&text);
    }
    opener.await.unwrap();
    assert_eq!(rest, chunk("late") + &done());

    // Slow response head: the client gets 200 and keep-alives meanwhile.
    upstream.push(Behavior::Late(
        Duration::from_millis(400),
        Box::new(Behavior::Stream {
            events: vec![chunk("from oa"), done()],
            interval: Duration::ZERO,
            gate: None,
        }),
    ));
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let keepalives = text.matches(": keep-alive\n\n").count();
    assert!(
        keepalives >= 2,
        "expected keep-alives before the first byte: {text:?}"
    );
    assert!(
        text.contains("from oa"),
        "the upstream answer follows the keep-alives"
    );
}

#[tokio::test]
async fn error_before_the_stream_keeps_the_upstream_status() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::Reply {
        status: 429,
        headers: vec![("retry-after-ms", "1500".into())],
        body: r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    });
    let gateway = gateway_for(&upstream, "15s").await;
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after-ms"], "1500");
    assert_eq!(error_of(response).await["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn late_error_after_keepalives_arrives_as_an_sse_error_event() {
    let slow_error = FakeUpstream::start("slow").await;
    let gateway = TestGateway::start(&format!(
        r#"
        [retry]
        max_attempts = 1
        [server]
        stream_keepalive = "30ms"
        [[deployments]]
        name = "slow"
        provider = "openai"
        base_url = "{}"
        models = ["gpt-4o"]
        timeout = "200ms"
        [[keys]]
        name = "app"
        key = "{KEY}"
        "#,
        slow_error.base_url()
    ))
    .await;
    slow_error.push(Behavior::DelayHead(Duration::from_secs(10)));
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 200, "keep-alives committed the status");
    let text = response.text().await.unwrap();
    assert!(text.starts_with(": keep-alive\n\n"), "{text:?}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let event: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["error"]["code"], "upstream_timeout");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn mid_stream_break_ends_with_error_event_and_no_done() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::BreakAfter(vec![chunk("partial")]));
    let gateway = gateway_for(&upstream, "15s").await;
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with(&chunk("partial")), "{text:?}");
    assert!(
        !text.contains("[DONE]"),
        "a broken stream must not look finished"
    );
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let event: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["error"]["type"], "server_error");
    assert_eq!(event["error"]["code"], "upstream_error");
}

/// What OpenAI streams when asked for usage: `"usage":null` on every chunk,
/// then a usage-only chunk.
fn stream_with_usage() -> Vec<String> {
    vec![
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n".into(),
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n".into(),
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":1,\"total_tokens\":12}}\n\n".into(),
        done(),
    ]
}

#[tokio::test]
async fn usage_is_always_metered_but_shown_only_to_clients_that_asked() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway_for(&upstream, "15s").await;

    upstream.push(Behavior::Stream {
        events: stream_with_usage(),
        interval: Duration::ZERO,
        gate: None,
    });
    let text = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        upstream.last().body["stream_options"]["include_usage"],
        true,
        "Sluice asked for usage"
    );
    assert_eq!(
        text,
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        "the client sees the stream it would have seen without Sluice"
    );

    upstream.push(Behavior::Stream {
        events: stream_with_usage(),
        interval: Duration::ZERO,
        gate: None,
    });
    let mut asked = stream_request();
    asked["stream_options"] = serde_json::json!({"include_usage": true});
    let text = gateway
        .post("/v1/chat/completions", Some(KEY), &asked)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        text,
        stream_with_usage().concat(),
        "a client that asked gets it untouched"
    );
    assert_eq!(
        upstream.last().body,
        asked,
        "and its body goes upstream unchanged"
    );

    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_tokens_total{deployment="oa",model="gpt-4o",type="prompt"} 22"#),
        "both streams were metered: {metrics}"
    );
}

/// The official SDKs stop reading at `[DONE]` and close the connection,
/// often before the upstream's body has ended: the usage that already
/// passed through is metered all the same.
#[tokio::test]
async fn a_client_that_closes_right_after_done_is_still_metered() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway_for(&upstream, "15s").await;
    let mut events = stream_with_usage();
    // The upstream's body ends well after its [DONE].
    events.push(": still open\n\n".into());
    upstream.push(Behavior::Stream {
        events,
        interval: Duration::from_millis(200),
        gate: None,
    });
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &stream_request())
        .await;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("[DONE]") {
        text.push_str(&next_text(&mut body).await.expect("a chunk"));
    }
    drop(body);
    let metered = r#"sluice_tokens_total{deployment="oa",model="gpt-4o",type="completion"} 1"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !gateway.metrics().await.contains(metered) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not metered: {}",
            gateway.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
