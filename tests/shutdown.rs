//! Graceful shutdown: stop accepting, let in-flight streams finish, and cut
//! them when the grace period ends.
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
use common::gateway::chat;
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;

/// No drain delay unless a test adds one: these tests are about what
/// follows the listeners closing.
fn config(upstream: &FakeUpstream, grace: &str) -> String {
    config_draining(upstream, grace, "0s")
}

fn config_draining(upstream: &FakeUpstream, grace: &str, drain_delay: &str) -> String {
    format!(
        "[server]\nshutdown_grace = \"{grace}\"\ndrain_delay = \"{drain_delay}\"\n[auth]\nrequired = false\n[[deployments]]\nname = \"oa\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o\"]\n",
        upstream.base_url()
    )
}

fn stream_body() -> serde_json::Value {
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    body
}

#[tokio::test]
async fn in_flight_stream_finishes_after_the_signal() {
    let upstream = FakeUpstream::start("oa").await;
    let gate = upstream.push_gated_stream(vec![chunk("a"), chunk("b"), done()]);
    let mut gateway = TestGateway::start(&config(&upstream, "10s")).await;
    let response = gateway
        .post("/v1/chat/completions", None, &stream_body())
        .await;
    let mut body = response.bytes_stream();
    assert_eq!(body.next().await.unwrap().unwrap(), chunk("a").as_bytes());

    gateway.shutdown();
    // New connections are refused once shutdown has begun.
    let mut refused = false;
    for _ in 0..50 {
        let fresh = reqwest::Client::new();
        if fresh.get(gateway.url("/healthz")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the gateway kept accepting after the signal");

    gate.notify_one();
    let mut rest = Vec::new();
    while let Some(item) = body.next().await {
        rest.extend_from_slice(&item.unwrap());
    }
    assert_eq!(String::from_utf8(rest).unwrap(), chunk("b") + &done());
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn grace_period_cuts_streams_that_run_on() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.push(Behavior::Endless);
    let mut gateway = TestGateway::start(&config(&upstream, "200ms")).await;
    let response = gateway
        .post("/v1/chat/completions", None, &stream_body())
        .await;
    let mut body = response.bytes_stream();
    assert!(body.next().await.unwrap().is_ok());
    gateway.shutdown();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("shutdown did not end after the grace period")
        .unwrap();
    let last_event = tokio::time::timeout(Duration::from_secs(5), async {
        let mut last = Vec::new();
        while let Some(Ok(bytes)) = body.next().await {
            last = bytes.to_vec();
        }
        String::from_utf8(last).unwrap()
    })
    .await
    .expect("the client stream was not cut");
    assert!(
        last_event.contains("\"code\":\"shutting_down\""),
        "{last_event:?}"
    );
    assert!(upstream.wait_stream_dropped(Duration::from_secs(5)).await);
}

/// `[server] drain_delay`: readiness turns false at the signal while the
/// listener keeps serving (HTTP/1 answers close their connections); only
/// after the delay are new connections refused.
#[tokio::test]
async fn drain_delay_turns_readiness_false_before_the_listener_closes() {
    let upstream = FakeUpstream::start("oa").await;
    let text = config_draining(&upstream, "10s", "700ms");
    let mut gateway = TestGateway::start(&text).await;
    let client = reqwest::Client::new();
    let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.headers().get("connection").is_none());

    gateway.shutdown();
    let started = std::time::Instant::now();
    let draining = loop {
        let ready = client.get(gateway.url("/readyz")).send().await.unwrap();
        if ready.status() == 503 {
            break ready;
        }
        assert!(started.elapsed() < Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(draining.headers()["connection"], "close");
    assert_eq!(
        draining.json::<serde_json::Value>().await.unwrap()["status"],
        "draining"
    );
    // Still served, on a fresh connection, while the delay runs.
    let answer = reqwest::Client::new()
        .post(gateway.url("/v1/chat/completions"))
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["connection"], "close");
    assert!(started.elapsed() < Duration::from_millis(600));

    let mut refused_after = None;
    while started.elapsed() < Duration::from_secs(3) {
        if reqwest::Client::new()
            .get(gateway.url("/healthz"))
            .send()
            .await
            .is_err()
        {
            refused_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = refused_after.expect("the listener closed after the delay");
    assert!(
        refused_after >= Duration::from_millis(650),
        "refused {refused_after:?} after the signal, before the 700 ms delay"
    );
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// The real binary: SIGTERM (what orchestrators send) keeps the listener
/// open for `drain_delay` with readiness false; SIGINT (Ctrl-C) skips it.
#[tokio::test]
async fn sigterm_drains_first_and_sigint_stops_at_once() {
    use common::process::{SluiceProcess, TempDir, free_port};
    let upstream = FakeUpstream::start("oa").await;
    let dir = TempDir::new("sluice-signals");
    let start = |port: u16| {
        let text = config_draining(&upstream, "10s", "3s").replace(
            "[server]\n",
            &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"),
        ) + "[usage]\nstore = \"none\"\n[batch]\nstore = \"none\"\n";
        let dir = dir.0.clone();
        async move { SluiceProcess::start(&dir, &format!("s{port}"), port, &text).await }
    };
    let client = reqwest::Client::new();

    let port = free_port();
    let sluice = start(port).await;
    let pid = sluice.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = client
        .get(format!("{}/readyz", sluice.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "still serving, not ready");
    let started = std::time::Instant::now();
    let (status, _) = sluice.terminate().await;
    assert!(status.success());
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let port = free_port();
    let mut sluice = start(port).await;
    let pid = sluice.child.id().to_string();
    let started = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = sluice.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "SIGINT waited for the drain delay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}
