//! Rate limits with the in-memory engine: exact admission counts, OpenAI's
//! 429 body and headers, TPM estimates and their correction, shared org
//! limits, and deployment quotas steering traffic.
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
use serde_json::json;

fn key(name: &str, extra: &str) -> String {
    format!("[[keys]]\nname = \"{name}\"\nkey = \"sk-{name}-0000000\"\n{extra}\n")
}

/// Sends `n` requests at once; returns the statuses and the responses.
async fn burst(
    gateway: &TestGateway,
    key: &str,
    n: usize,
    body: serde_json::Value,
) -> Vec<reqwest::Response> {
    let sends = (0..n).map(|_| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn count(responses: &[reqwest::Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status() == status).count()
}

#[tokio::test]
async fn rpm_admits_exactly_the_limit_and_tells_when_to_return() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{}{}",
        deployment("oa", &upstream, ""),
        key("team", "rpm = 30")
    ))
    .await;

    let responses = burst(&gateway, "sk-team-0000000", 100, chat("gpt-4o")).await;
    assert_eq!(count(&responses, 200), 30);
    assert_eq!(count(&responses, 429), 70);
    assert_eq!(
        upstream.calls(),
        30,
        "refused requests never reach the upstream"
    );

    let ok = responses.iter().find(|r| r.status() == 200).unwrap();
    assert_eq!(ok.headers()["x-ratelimit-limit-requests"], "30");
    assert!(ok.headers().contains_key("x-ratelimit-remaining-requests"));
    assert!(
        ok.headers()["x-ratelimit-reset-requests"]
            .to_str()
            .unwrap()
            .ends_with('s')
    );

    let refused = responses.into_iter().find(|r| r.status() == 429).unwrap();
    let retry_ms: u64 = refused.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let retry_s: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_ms > 0 && retry_ms <= 2000,
        "one request refills in 2 s: {retry_ms}"
    );
    assert_eq!(retry_s, retry_ms.div_ceil(1000));
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    let error = error_of(refused).await;
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["param"].is_null());
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for key team on requests per min (RPM): Limit 30, Used 30, Requested 1. Please try again in "),
        "{message}"
    );

    tokio::time::sleep(Duration::from_millis(retry_ms + 20)).await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            Some("sk-team-0000000"),
            &chat("gpt-4o"),
        )
        .await;
    assert_eq!(
        response.status(),
        200,
        "after retry-after-ms the next request passes"
    );
}

#[tokio::test]
async fn burst_adds_capacity_and_tiers_give_defaults() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[limits]\nburst = 0.1\n[tiers.free]\nrpm = 20\n{}{}{}",
        deployment("oa", &upstream, ""),
        key("bursty", "rpm = 30"),
        key("freebie", "tier = \"free\""),
    ))
    .await;
    let responses = burst(&gateway, "sk-bursty-0000000", 100, chat("gpt-4o")).await;
    assert_eq!(count(&responses, 200), 33, "30 plus 10% burst");
    let responses = burst(&gateway, "sk-freebie-0000000", 50, chat("gpt-4o")).await;
    assert_eq!(count(&responses, 200), 22, "the tier's 20 plus 10% burst");
}

#[tokio::test]
async fn tpm_admits_what_the_token_counts_predict_then_corrects_to_usage() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(500)));
    let gateway = TestGateway::start(&format!(
        "{}{}",
        deployment("oa", &upstream, ""),
        key("tok", "tpm = 1000")
    ))
    .await;
    // "hello" then 189 x " hello" is 190 o200k tokens; + 3 per message + 1
    // for the role + 3 for the reply + max_tokens 50 = 247 tokens each.
    let prompt = std::iter::repeat_n("hello", 190)
        .collect::<Vec<_>>()
        .join(" ");
    let body = json!({"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": prompt}]});
    let responses = burst(&gateway, "sk-tok-0000000", 10, body.clone()).await;
    assert_eq!(count(&responses, 200), 4, "floor(1000 / 247)");
    let refused = responses.into_iter().find(|r| r.status() == 429).unwrap();
    let error = error_of(refused).await;
    assert_eq!(error["type"], "tokens");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("tokens per min (TPM): Limit 1000, Used 988, Requested 247"),
        "{}",
        error["message"]
    );

    // Each answer reported 7 tokens of usage: the estimates were refunded.
    upstream.set_default(Behavior::Echo);
    let response = gateway
        .post(
            "/v1/chat/completions",
            Some("sk-tok-0000000"),
            &chat("gpt-4o"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let remaining: u64 = response.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 4 x 7 used, plus this request's own estimate (3+1+2+3 prompt + 512 default):
    // 1000 - 28 - 521 = 451, plus whatever refilled meanwhile.
    assert!((451..=471).contains(&remaining), "remaining {remaining}");
}

#[tokio::test]
async fn a_request_larger_than_the_tpm_limit_can_never_fit() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{}{}",
        deployment("oa", &upstream, ""),
        key("small", "tpm = 100")
    ))
    .await;
    let body = json!({"model": "gpt-4o", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}]});
    let response = gateway
        .post("/v1/chat/completions", Some("sk-small-0000000"), &body)
        .await;
    assert_eq!(response.status(), 429);
    assert!(
        !response.headers().contains_key("retry-after"),
        "no wait makes it fit"
    );
    assert_eq!(response.headers()["x-should-retry"], "false");
    let message = error_of(response).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with(
            "Request too large for key small on tokens per min (TPM): Limit 100, Requested 508."
        ),
        "{message}"
    );
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn streamed_usage_corrects_the_charge() {
    let upstream = FakeUpstream::start("oa").await;
    let usage_event = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n";
    upstream.push(Behavior::Stream {
        events: vec![
            common::fake_upstream::chunk("hi"),
            usage_event.into(),
            common::fake_upstream::done(),
        ],
        interval: Duration::ZERO,
        gate: None,
    });
    let gateway = TestGateway::start(&format!(
        "{}{}",
        deployment("oa", &upstream, ""),
        key("streamer", "tpm = 10000")
    ))
    .await;
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    body["max_tokens"] = 1000.into();
    let response = gateway
        .post("/v1/chat/completions", Some("sk-streamer-0000000"), &body)
        .await;
    let charged: u64 = response.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        charged < 10000 - 1000,
        "the estimate was charged up front: {charged}"
    );
    response.text().await.unwrap();

    let after = gateway
        .post(
            "/v1/chat/completions",
            Some("sk-streamer-0000000"),
            &chat("gpt-4o"),
        )
        .await;
    let remaining: u64 = after.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 12 for the stream, ~521 for this request's estimate, a few refilled.
    assert!(
        remaining > 10000 - 12 - 521 - 5,
        "the streamed call settled to its usage: {remaining}"
    );
}

#[tokio::test]
async fn org_limit_is_shared_by_its_keys() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[orgs.research]\nrpm = 10\n{}{}{}",
        deployment("oa", &upstream, ""),
        key("alice", "org = \"research\""),
        key("bob", "org = \"research\""),
    ))
    .await;
    let (a, b) = tokio::join!(
        burst(&gateway, "sk-alice-0000000", 8, chat("gpt-4o")),
        burst(&gateway, "sk-bob-0000000", 8, chat("gpt-4o"))
    );
    assert_eq!(count(&a, 200) + count(&b, 200), 10);
    let refused = a.into_iter().chain(b).find(|r| r.status() == 429).unwrap();
    let message = error_of(refused).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("for org research on requests per min"),
        "{message}"
    );
}

#[tokio::test]
async fn model_ceiling_applies_to_everyone() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[models.\"gpt-4o\"]\nrpm = 3\n{}",
        deployment("oa", &upstream, ""),
    ))
    .await;
    for expected in [200, 200, 200, 429] {
        let response = gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await;
        assert_eq!(response.status(), expected);
    }
}

#[tokio::test]
async fn requests_flow_to_deployments_with_quota_left() {
    let small = FakeUpstream::start("small").await;
    let big = FakeUpstream::start("big").await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}{}",
        deployment("small", &small, "priority = 0\nrpm = 5"),
        deployment("big", &big, "priority = 1\nrpm = 12"),
    ))
    .await;
    for _ in 0..17 {
        let response = gateway
            .post("/v1/chat/completions", None, &chat("gpt-4o"))
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        small.calls(),
        5,
        "the preferred deployment is used up to its quota"
    );
    assert_eq!(
        big.calls(),
        12,
        "then traffic moves on instead of earning a provider 429"
    );

    let response = gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after-ms"));
    let message = error_of(response).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("every deployment of model gpt-4o"),
        "{message}"
    );
    assert_eq!(
        small.calls() + big.calls(),
        17,
        "exhausted deployments receive nothing"
    );
}

#[tokio::test]
async fn provider_rate_limit_headers_are_replaced_by_the_callers() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::Reply {
        status: 200,
        headers: vec![
            ("x-ratelimit-remaining-requests", "9999".into()),
            ("content-type", "application/json".into()),
        ],
        body: "{}".into(),
    });
    let gateway = TestGateway::start(&format!(
        "{}{}",
        deployment("oa", &upstream, ""),
        key("k", "rpm = 5")
    ))
    .await;
    let response = gateway
        .post(
            "/v1/chat/completions",
            Some("sk-k-0000000"),
            &chat("gpt-4o"),
        )
        .await;
    assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "4");

    let unlimited = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}",
        deployment("oa", &upstream, "")
    ))
    .await;
    let response = unlimited
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    assert!(
        !response
            .headers()
            .contains_key("x-ratelimit-remaining-requests"),
        "the provider account's quota is not the caller's business"
    );
}
