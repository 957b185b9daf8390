//! Priority groups and weights, observed over real sockets.
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

use common::gateway::{chat, deployment};
use common::{FakeUpstream, TestGateway};

fn weighted(name: &str, upstream: &FakeUpstream, priority: i32, weight: u32) -> String {
    deployment(
        name,
        upstream,
        &format!("priority = {priority}\nweight = {weight}"),
    )
}

#[tokio::test]
async fn weights_split_traffic_within_the_lowest_priority_group() {
    let heavy = FakeUpstream::start("heavy").await;
    let light = FakeUpstream::start("light").await;
    let backup = FakeUpstream::start("backup").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}{}{}",
        weighted("heavy", &heavy, 0, 3),
        weighted("light", &light, 0, 1),
        weighted("backup", &backup, 1, 100),
    ))
    .await;

    let total = 800;
    for _ in 0..total {
        let response = gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        backup.calls(),
        0,
        "a higher priority number is not used while the lower works"
    );
    assert_eq!(heavy.calls() + light.calls(), total);
    let share = heavy.calls() as f64 / total as f64;
    // 3:1 weights -> 75%; 800 draws put 5 standard deviations at about ±7.7%.
    assert!((share - 0.75).abs() < 0.077, "heavy share {share}");
}

#[tokio::test]
async fn response_names_the_deployment_that_served() {
    let only = FakeUpstream::start("only").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}",
        weighted("eu-1", &only, 0, 1)
    ))
    .await;
    let response = gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    assert_eq!(response.headers()["x-sluice-deployment"], "eu-1");
}

/// A client that leaves before the upstream answers ends its attempt: the
/// deployment's in-flight count (which `least_outstanding`, `latency` and
/// the headroom estimate read) comes back down instead of leaking.
#[tokio::test]
async fn a_client_that_leaves_does_not_leave_a_call_in_flight() {
    let slow = FakeUpstream::start("slow").await;
    slow.set_default(common::Behavior::DelayHead(std::time::Duration::from_secs(
        3,
    )));
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[admin]\ntoken = \"admin-token-inflight\"\n{}",
        deployment("slow", &slow, "")
    ))
    .await;
    let in_flight = || async {
        let view = gateway
            .get_json("/admin/deployments", Some("admin-token-inflight"))
            .await;
        view["data"][0]["in_flight"].as_u64().unwrap()
    };
    let left = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .json(&chat("gpt-4o"))
        .timeout(std::time::Duration::from_millis(300))
        .send()
        .await;
    assert!(left.is_err(), "the client gave up first");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while in_flight().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the call stayed in flight"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
