//! A Redis that hangs: after the first failures the store breaker makes the
//! `on_error` decision at once for every request (instead of each waiting out
//! the timeout once per store it touches), and service recovers within about
//! a second of Redis coming back.
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

use common::gateway::{chat, deployment};
use common::redis::RedisServer;
use common::{FakeUpstream, TestGateway};

const KEY: &str = "sk-shared-0000000";

/// Limits, the cache and a budget, all in Redis.
async fn gateway(redis: &RedisServer, on_error: &str) -> (FakeUpstream, TestGateway) {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"{on_error}\"\ntimeout = \"250ms\"\n[cache]\nenabled = true\nstore = \"redis\"\ncache_all = true\n{}[[keys]]\nname = \"shared\"\nkey = \"{KEY}\"\nrpm = 100000\nbudget_daily_usd = 1000.0\n",
        redis.url(),
        deployment("oa", &upstream, "")
    ))
    .await;
    (upstream, gateway)
}

/// A distinct request each time (so the cache never answers).
async fn send(gateway: &TestGateway, n: usize) -> (u16, Duration, bool) {
    let mut body = chat("gpt-4o");
    body["user"] = serde_json::json!(format!("u{n}"));
    body["messages"][0]["content"] = serde_json::json!(format!("question {n}"));
    let started = Instant::now();
    let response = gateway.post("/v1/chat/completions", Some(KEY), &body).await;
    let limited = response
        .headers()
        .contains_key("x-ratelimit-remaining-requests");
    (response.status().as_u16(), started.elapsed(), limited)
}

async fn until_limited(gateway: &TestGateway) -> Duration {
    let started = Instant::now();
    for n in 0..400 {
        if send(gateway, 10_000 + n).await.2 {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway never reached Redis");
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn a_hung_redis_costs_requests_nothing_once_the_breaker_opens() {
    let redis = RedisServer::start().await;
    let (upstream, gateway) = gateway(&redis, "fail_open").await;
    until_limited(&gateway).await;

    redis.freeze();
    let mut times = Vec::new();
    for n in 0..20 {
        let (status, took, _) = send(&gateway, n).await;
        assert_eq!(status, 200, "fail_open admits");
        times.push(took);
    }
    let late = median(times[5..].to_vec());
    assert!(
        late < Duration::from_millis(150),
        "requests after the first failures wait out no timeout: median {late:?} (times {times:?})"
    );
    assert!(upstream.calls() >= 20);

    redis.thaw();
    let recovered = until_limited(&gateway).await;
    assert!(
        recovered < Duration::from_secs(2),
        "limits apply again {recovered:?} after Redis is back"
    );
}

#[tokio::test]
async fn fail_closed_refuses_at_once_while_redis_hangs() {
    let redis = RedisServer::start().await;
    let (_upstream, gateway) = gateway(&redis, "fail_closed").await;
    until_limited(&gateway).await;
    redis.freeze();
    let mut times = Vec::new();
    for n in 0..12 {
        let (status, took, _) = send(&gateway, n).await;
        assert_eq!(status, 503);
        times.push(took);
    }
    let late = median(times[4..].to_vec());
    assert!(
        late < Duration::from_millis(100),
        "median {late:?} of {times:?}"
    );
    redis.thaw();
}

/// A key with an RPM of 50 in Redis, `fail_open`.
async fn limited_gateway(redis: &RedisServer) -> (FakeUpstream, TestGateway) {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"fail_open\"\ntimeout = \"250ms\"\n{}[[keys]]\nname = \"shared\"\nkey = \"{KEY}\"\nrpm = 50\n",
        redis.url(),
        deployment("oa", &upstream, "")
    ))
    .await;
    (upstream, gateway)
}

/// How many of `n` requests sent at once are admitted.
async fn burst(gateway: &TestGateway, n: usize) -> usize {
    let sends = (0..n).map(|i| send(gateway, 20_000 + i));
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .filter(|(status, _, _)| *status == 200)
        .count()
}

/// After an outage long enough for every reconnection delay to reach its
/// ceiling, a burst one second after Redis answers again meets the exact
/// limit: the breaker was closed by the prober, not by the burst.
#[tokio::test]
async fn limits_are_exact_one_second_after_redis_comes_back() {
    for outage in [Duration::from_secs(4), Duration::from_millis(600)] {
        let mut redis = RedisServer::start().await;
        let (_upstream, gateway) = limited_gateway(&redis).await;
        until_limited(&gateway).await;
        redis.stop();
        for n in 0..10 {
            assert_eq!(send(&gateway, 30_000 + n).await.0, 200, "fail_open admits");
        }
        tokio::time::sleep(outage).await;
        redis.restart().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            burst(&gateway, 200).await,
            50,
            "a fresh Redis holds the whole RPM of 50 and no more (outage {outage:?})"
        );
    }
}

/// Failures in a row that open the store breaker (`redis::breaker::TRIP_AFTER`).
fn breaker_trip() -> u32 {
    3
}

/// The same for a Redis that hung and resumed (its connections survive).
#[tokio::test]
async fn limits_are_exact_one_second_after_a_hung_redis_resumes() {
    let redis = RedisServer::start().await;
    let (_upstream, gateway) = limited_gateway(&redis).await;
    until_limited(&gateway).await;
    redis.freeze();
    for n in 0..10 {
        assert_eq!(send(&gateway, 30_000 + n).await.0, 200, "fail_open admits");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.thaw();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The request that found Redis before the hang took one of the 50, and
    // the few charges that timed out while it hung (before the breaker
    // opened) were carried out by Redis when it resumed.
    let admitted = burst(&gateway, 200).await;
    assert!(
        (50 - 1 - breaker_trip() as usize..=49).contains(&admitted),
        "{admitted} of 200 admitted against an RPM of 50"
    );
}
