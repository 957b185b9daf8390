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
