//! Deployment quotas across a call's attempts: a retry, a failover or a
//! fallback charges the deployment it is sent to; a deployment without room
//! is skipped; tokens of attempts that produced nothing are refunded and the
//! serving deployment's are corrected to the reported usage. In memory and
//! through Redis.
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
use common::redis::RedisServer;
use common::{Behavior, FakeUpstream, TestGateway};

const OPEN: &str = "[auth]\nrequired = false\n[retry]\nbase_delay = \"1ms\"\n";

async fn send(gateway: &TestGateway, model: &str) -> reqwest::Response {
    gateway
        .post("/v1/chat/completions", None, &chat(model))
        .await
}

/// `failing` (preferred) answers `failure`; `spare` answers. Both allow 2 RPM.
async fn failing_then_spare(failure: Behavior) -> (FakeUpstream, FakeUpstream, String) {
    let failing = FakeUpstream::start("failing").await;
    failing.set_default(failure);
    let spare = FakeUpstream::start("spare").await;
    let config = format!(
        "{}{}",
        deployment("failing", &failing, "priority = 0\nrpm = 2"),
        deployment("spare", &spare, "priority = 1\nrpm = 2"),
    );
    (failing, spare, config)
}

/// Two calls fail over from `failing` to `spare`; had the failovers not
/// charged `spare`, the third would be admitted there.
async fn failovers_use_up_the_spare(gateway: &TestGateway, spare: &FakeUpstream) {
    for _ in 0..2 {
        let response = send(gateway, "gpt-4o").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-deployment"], "spare");
        assert_eq!(response.headers()["x-sluice-attempts"], "2");
    }
    assert_eq!(spare.calls(), 2);
    let refused = send(gateway, "gpt-4o").await;
    assert_eq!(refused.status(), 429, "both quotas are used up");
    let message = error_of(refused).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("on requests per min (RPM)"), "{message}");
    assert_eq!(spare.calls(), 2, "the refused call reached no upstream");
}

#[tokio::test]
async fn a_failover_after_a_500_charges_the_deployment_that_takes_it() {
    let (_failing, spare, config) = failing_then_spare(Behavior::server_error()).await;
    let gateway = TestGateway::start(&format!("{OPEN}{config}")).await;
    failovers_use_up_the_spare(&gateway, &spare).await;
}

#[tokio::test]
async fn a_failover_after_a_429_charges_the_deployment_that_takes_it() {
    let (failing, spare, config) = failing_then_spare(Behavior::Reply {
        status: 429,
        headers: vec![("retry-after", "30".into())],
        body: r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    })
    .await;
    let gateway = TestGateway::start(&format!("{OPEN}{config}")).await;
    // The first call fails over; the throttled deployment is then left out,
    // so the second goes to the spare at once.
    let response = send(&gateway, "gpt-4o").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "spare");
    let response = send(&gateway, "gpt-4o").await;
    assert_eq!(response.status(), 200);
    assert_eq!(spare.calls(), 2);
    assert_eq!(failing.calls(), 1);
    assert_eq!(
        send(&gateway, "gpt-4o").await.status(),
        429,
        "the failover charged the spare's quota"
    );
}

#[tokio::test]
async fn a_deployment_without_room_is_skipped_and_counted() {
    let failing = FakeUpstream::start("failing").await;
    failing.set_default(Behavior::server_error());
    let spare = FakeUpstream::start("spare").await;
    let gateway = TestGateway::start(&format!(
        "{OPEN}{}{}",
        deployment("failing", &failing, "priority = 0\nrpm = 10"),
        deployment("spare", &spare, "priority = 1\nrpm = 1"),
    ))
    .await;
    assert_eq!(send(&gateway, "gpt-4o").await.status(), 200);
    assert_eq!(
        spare.calls(),
        1,
        "the first failover used the spare's quota"
    );

    // The next call's failover finds no room on the spare: the retries stay
    // on the failing deployment, and the client gets its failure.
    let response = send(&gateway, "gpt-4o").await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-sluice-deployment"], "failing");
    assert_eq!(spare.calls(), 1, "the spare over its quota was not sent to");
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_quota_skips_total{deployment="spare"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_fallback_models_deployment_is_charged() {
    let failing = FakeUpstream::start("failing").await;
    failing.set_default(Behavior::server_error());
    let mini = FakeUpstream::start("mini").await;
    let gateway = TestGateway::start(&format!(
        "{OPEN}[models.\"gpt-4o\"]\nfallbacks = [\"gpt-4o-mini\"]\n{}\
         [[deployments]]\nname = \"mini\"\nprovider = \"openai\"\nbase_url = \"{}\"\n\
         models = [\"gpt-4o-mini\"]\nrpm = 1\n",
        deployment("failing", &failing, ""),
        mini.base_url(),
    ))
    .await;
    let response = send(&gateway, "gpt-4o").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "mini");
    assert_eq!(response.headers()["x-sluice-fallback-from"], "gpt-4o");

    let direct = send(&gateway, "gpt-4o-mini").await;
    assert_eq!(
        direct.status(),
        429,
        "the fallback used mini's only request"
    );
    let message = error_of(direct).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("deployment mini"), "{message}");
    assert_eq!(mini.calls(), 1);
}

#[tokio::test]
async fn tokens_are_refunded_where_nothing_was_produced_and_settled_where_served() {
    // Each call is estimated at 521 tokens (9 of prompt, 512 of default
    // output); each quota holds two such estimates.
    let failing = FakeUpstream::start("failing").await;
    failing.set_default(Behavior::server_error());
    let spare = FakeUpstream::start("spare").await;
    let gateway = TestGateway::start(&format!(
        "{OPEN}{}{}",
        deployment("failing", &failing, "priority = 0\ntpm = 1100"),
        deployment("spare", &spare, "priority = 1\ntpm = 1100"),
    ))
    .await;
    for _ in 0..5 {
        let response = send(&gateway, "gpt-4o").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-deployment"], "spare");
    }
    assert_eq!(
        failing.calls(),
        5,
        "the failed attempts' tokens were refunded, so each call still starts there"
    );
    assert_eq!(
        spare.calls(),
        5,
        "the spare's charges were corrected to the 7 tokens each answer reported"
    );
}

#[tokio::test]
async fn failovers_charge_the_spare_through_redis() {
    let redis = RedisServer::start().await;
    let (_failing, spare, config) = failing_then_spare(Behavior::server_error()).await;
    let probe = FakeUpstream::start("probe").await;
    let gateway = TestGateway::start(&format!(
        "[redis]\nurl = \"{}\"\non_error = \"fail_closed\"\n{OPEN}{config}\
         [[deployments]]\nname = \"probe\"\nprovider = \"openai\"\nbase_url = \"{}\"\n\
         models = [\"gpt-4o-mini\"]\nrpm = 1000\n",
        redis.url(),
        probe.base_url(),
    ))
    .await;
    // Fail closed until the background connection is up: wait on a model
    // whose quota is far from the test's.
    let mut connected = false;
    for _ in 0..100 {
        if send(&gateway, "gpt-4o-mini").await.status() == 200 {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "the gateway never reached Redis");
    failovers_use_up_the_spare(&gateway, &spare).await;
}
