//! Admission control over real sockets: priority classes, fairness between
//! keys, bounded depth and wait, and callers leaving the queue.
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

use std::time::{Duration, Instant};

use common::gateway::{chat, deployment, error_of};
use common::{Behavior, FakeUpstream, TestGateway};

fn keys() -> &'static str {
    "[[keys]]\nname = \"a\"\nkey = \"sk-key-a-000000\"\n[[keys]]\nname = \"b\"\nkey = \"sk-key-b-000000\"\n[[keys]]\nname = \"capped\"\nkey = \"sk-capped-00000\"\nmax_priority = \"batch\"\n"
}

/// One "slow" deployment whose upstream answers after `delay_ms`, with
/// `server` config text before it (e.g. `[server]` limits) and `extra`
/// lines in it, and the test keys.
async fn slow_gateway(delay_ms: u64, server: &str, extra: &str) -> (FakeUpstream, TestGateway) {
    let upstream = FakeUpstream::start("slow").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(delay_ms)));
    let config = format!("{server}{}{}", deployment("slow", &upstream, extra), keys());
    let gateway = TestGateway::start(&config).await;
    (upstream, gateway)
}

async fn send(gateway: &TestGateway, key: &str, priority: &str) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-sluice-priority", priority)
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn realtime_requests_finish_before_queued_batch_work() {
    let (upstream, gateway) = slow_gateway(100, "", "max_concurrency = 1").await;
    let started = Instant::now();
    let batch: Vec<_> = (0..10)
        .map(|_| {
            let request = send(&gateway, "sk-key-a-000000", "batch");
            async move {
                assert_eq!(request.await.status(), 200);
                started.elapsed()
            }
        })
        .collect();
    let realtime_arrival = Duration::from_millis(40);
    let realtime: Vec<_> = (0..3)
        .map(|_| {
            let request = send(&gateway, "sk-key-b-000000", "realtime");
            async move {
                tokio::time::sleep(realtime_arrival).await;
                assert_eq!(request.await.status(), 200);
                started.elapsed()
            }
        })
        .collect();
    let (mut batch_done, realtime_done) = tokio::join!(
        futures_util::future::join_all(batch),
        futures_util::future::join_all(realtime)
    );
    batch_done.sort();
    // The first batch request was already running when realtime arrived.
    let last_realtime = realtime_done.iter().max().unwrap();
    let first_queued_batch = batch_done[1];
    assert!(
        *last_realtime < first_queued_batch,
        "realtime finished at {realtime_done:?}, queued batch from {first_queued_batch:?}"
    );
    assert_eq!(upstream.calls(), 13);
}

#[tokio::test]
async fn one_key_with_fifty_queued_does_not_delay_anothers_single_request() {
    let (_upstream, gateway) = slow_gateway(15, "", "max_concurrency = 1").await;
    let started = Instant::now();
    let flood: Vec<_> = (0..50)
        .map(|_| {
            let request = send(&gateway, "sk-key-a-000000", "standard");
            async move {
                request.await;
                started.elapsed()
            }
        })
        .collect();
    let single = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        send(&gateway, "sk-key-b-000000", "standard").await;
        started.elapsed()
    };
    let (flood_done, single_done) = tokio::join!(futures_util::future::join_all(flood), single);
    let ahead = flood_done
        .iter()
        .filter(|done| **done < single_done)
        .count();
    assert!(ahead <= 5, "{ahead} of key A's requests went first");
}

#[tokio::test]
async fn a_full_queue_and_a_long_wait_get_503_with_retry_after() {
    let (_upstream, gateway) = slow_gateway(400, "[server]\nmax_concurrency = 1\n[queue]\nmax_depth = 1\nmax_wait = \"150ms\"\nmax_wait_by_class = { batch = \"5s\" }\n", "").await;
    let running = send(&gateway, "sk-key-a-000000", "batch");
    let queued = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&gateway, "sk-key-a-000000", "batch").await
    };
    let refused = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&gateway, "sk-key-b-000000", "standard").await
    };
    let (running, queued, refused) = tokio::join!(running, queued, refused);
    assert_eq!(running.status(), 200);
    assert_eq!(queued.status(), 200, "batch may wait 5 s");
    assert_eq!(refused.status(), 503, "the queue was full");
    assert!(refused.headers().contains_key("retry-after"));
    let error = error_of(refused).await;
    assert_eq!(error["type"], "server_overloaded");
    assert_eq!(error["code"], "server_overloaded");

    // A standard request waits at most 150 ms.
    let running = send(&gateway, "sk-key-a-000000", "batch");
    let waited = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let response = send(&gateway, "sk-key-b-000000", "standard").await;
        (response, started.elapsed())
    };
    let (running, (response, waited)) = tokio::join!(running, waited);
    assert_eq!(running.status(), 200);
    assert_eq!(response.status(), 503);
    assert!(waited < Duration::from_millis(350), "{waited:?}");
    let retry_ms: u64 = response.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_ms > 0);
}

#[tokio::test]
async fn a_queued_client_that_leaves_frees_its_place() {
    let (upstream, gateway) = slow_gateway(
        300,
        "[server]\nmax_concurrency = 1\n[queue]\nmax_depth = 1\n",
        "",
    )
    .await;
    let (client, url) = (gateway.client.clone(), gateway.url("/v1/chat/completions"));
    let post = move |key: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&chat("gpt-4o"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let running = tokio::spawn(post("sk-key-a-000000"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let leaving = tokio::spawn(post("sk-key-a-000000"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    leaving.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = send(&gateway, "sk-key-b-000000", "standard").await;
    assert_eq!(
        response.status(),
        200,
        "the departed caller's place was free"
    );
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(
        upstream.calls(),
        2,
        "the departed request never reached the upstream"
    );
}

#[tokio::test]
async fn priority_header_is_checked_and_capped() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway =
        TestGateway::start(&format!("{}{}", deployment("oa", &upstream, ""), keys())).await;
    let response = send(&gateway, "sk-key-a-000000", "urgent").await;
    assert_eq!(response.status(), 400);
    assert!(
        error_of(response).await["message"]
            .as_str()
            .unwrap()
            .contains("x-sluice-priority")
    );
    assert_eq!(
        send(&gateway, "sk-capped-00000", "critical").await.status(),
        200
    );
}
