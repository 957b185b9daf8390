//! Failover, throttling from upstream hints, circuit breakers, the retry
//! budget, fallbacks and the 503 when nothing can serve, with faults injected
//! by the fake upstream.
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

use common::fake_upstream::{chunk, done};
use common::gateway::{chat, deployment, error_of, throttled_with_fallback};
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;
use serde_json::Value;

const ADMIN: &str = "admin-token-0123456789";

fn open(extra: &str) -> String {
    format!("[auth]\nrequired = false\n[admin]\ntoken = \"{ADMIN}\"\n{extra}\n")
}

/// Two upstreams serving gpt-4o: `first` in priority group 0, `second` in
/// group 1, behind an open gateway.
async fn two_groups(first: &str, second: &str) -> (FakeUpstream, FakeUpstream, TestGateway) {
    let (a, b) = (
        FakeUpstream::start(first).await,
        FakeUpstream::start(second).await,
    );
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        open(""),
        deployment(first, &a, "priority = 0"),
        deployment(second, &b, "priority = 1")
    ))
    .await;
    (a, b, gateway)
}

/// A 429 with one hint header, as OpenAI words it.
fn rate_limited(header: &'static str, value: &str) -> Behavior {
    Behavior::Reply {
        status: 429,
        headers: vec![(header, value.into())],
        body: r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    }
}

async fn ask(gateway: &TestGateway) -> reqwest::Response {
    gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await
}

async fn admin_view(gateway: &TestGateway, name: &str) -> serde_json::Value {
    let view = gateway.get_json("/admin/deployments", Some(ADMIN)).await;
    view["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_throttled_deployment_rests_for_its_hint_while_the_next_group_serves() {
    let (primary, _backup, gateway) = two_groups("primary", "backup").await;
    primary.push(rate_limited("retry-after", "1"));

    let response = ask(&gateway).await;
    assert_eq!(response.status(), 200, "the client never sees the 429");
    assert_eq!(response.headers()["x-sluice-deployment"], "backup");
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    let view = admin_view(&gateway, "primary").await;
    assert_eq!(view["usable"], false);
    assert_eq!(view["reason"], "throttled");

    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            ask(&gateway).await.headers()["x-sluice-deployment"],
            "backup"
        );
    }
    assert_eq!(primary.calls(), 1, "no traffic while throttled");
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed())).await;
    let response = ask(&gateway).await;
    assert_eq!(
        response.headers()["x-sluice-deployment"],
        "primary",
        "traffic comes back after the hint"
    );
}

#[tokio::test]
async fn reported_zero_headroom_moves_traffic_before_any_429() {
    let (primary, _backup, gateway) = two_groups("primary", "backup").await;
    primary.push(Behavior::Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-ratelimit-remaining-requests", "0".into()),
            ("x-ratelimit-reset-requests", "600ms".into()),
        ],
        body: r#"{"choices":[]}"#.into(),
    });
    assert_eq!(
        ask(&gateway).await.headers()["x-sluice-deployment"],
        "primary"
    );
    assert_eq!(
        ask(&gateway).await.headers()["x-sluice-deployment"],
        "backup"
    );
    assert_eq!(
        admin_view(&gateway, "primary").await["reason"],
        "no_headroom"
    );
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(
        ask(&gateway).await.headers()["x-sluice-deployment"],
        "primary"
    );
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_fails_over_within_the_deadline() {
    let stuck = FakeUpstream::start("stuck").await;
    let fine = FakeUpstream::start("fine").await;
    stuck.set_default(Behavior::DelayHead(Duration::from_secs(30)));
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        open("[server]\nrequest_timeout = \"5s\""),
        deployment("stuck", &stuck, "priority = 0\ntimeout = \"200ms\""),
        deployment("fine", &fine, "priority = 1")
    ))
    .await;
    let started = Instant::now();
    let response = ask(&gateway).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "fine");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_flaky_deployment_is_cut_off_by_its_breaker_and_comes_back() {
    let flaky = FakeUpstream::start("flaky").await;
    let steady = FakeUpstream::start("steady").await;
    flaky.set_default(Behavior::Flaky { rate: 0.5 });
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        open(
            "[circuit_breaker]\nfailure_threshold = 3\nfailure_rate = 0.3\nmin_calls = 6\nrecovery_timeout = \"400ms\"\nsuccess_threshold = 1\n[retry]\nbudget_ratio = 1.0"
        ),
        deployment("flaky", &flaky, "timeout = \"200ms\""),
        deployment("steady", &steady, "")
    ))
    .await;
    let mut opened = false;
    for _ in 0..200 {
        let response = ask(&gateway).await;
        assert_eq!(response.status(), 200, "the client sees no errors");
        if admin_view(&gateway, "flaky").await["circuit"] == "open" {
            opened = true;
            break;
        }
    }
    assert!(
        opened,
        "the breaker opened: {} {}",
        flaky.calls(),
        admin_view(&gateway, "flaky").await
    );
    let calls = flaky.calls();
    for _ in 0..20 {
        assert_eq!(
            ask(&gateway).await.headers()["x-sluice-deployment"],
            "steady"
        );
    }
    assert_eq!(flaky.calls(), calls, "an open circuit gets no traffic");

    flaky.set_default(Behavior::Echo);
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..40 {
        assert_eq!(ask(&gateway).await.status(), 200);
        if admin_view(&gateway, "flaky").await["circuit"] == "closed" {
            return;
        }
    }
    panic!("the breaker never closed after recovery");
}

#[tokio::test]
async fn the_retry_budget_bounds_upstream_load_during_an_outage() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    for upstream in [&a, &b] {
        upstream.set_default(Behavior::Reply {
            status: 500,
            headers: vec![],
            body: r#"{"error":{"message":"down","type":"server_error","param":null,"code":null}}"#
                .into(),
        });
    }
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        open(
            "[retry]\nmax_attempts = 5\nbase_delay = \"1ms\"\nmax_delay = \"2ms\"\nbudget_ratio = 0.2\nbudget_min_per_sec = 1\n[circuit_breaker]\nfailure_threshold = 100000\nmin_calls = 100000"
        ),
        deployment("a", &a, ""),
        deployment("b", &b, "")
    ))
    .await;
    let started = Instant::now();
    for _ in 0..100 {
        let response = ask(&gateway).await;
        assert_eq!(
            response.status(),
            500,
            "the upstream's error passes through"
        );
        assert_eq!(error_of(response).await["message"], "down");
    }
    let calls = a.calls() + b.calls();
    let floor = 1.0 + started.elapsed().as_secs_f64().ceil();
    let budget = (100.0 * 1.2 + floor) as usize;
    assert!(
        calls <= budget,
        "{calls} upstream calls for 100 requests (budget {budget})"
    );
    assert!(calls > 100, "some retries were allowed: {calls}");
}

#[tokio::test]
async fn fallbacks_serve_from_the_next_model_and_say_so() {
    let (big, small, fallback) = throttled_with_fallback().await;
    let gateway = TestGateway::start(&format!("{}{fallback}", open(""))).await;
    for _ in 0..3 {
        let response = gateway
            .post("/v1/chat/completions", None, &chat("gpt-4.1"))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-model"], "gpt-4.1-mini");
        assert_eq!(response.headers()["x-sluice-fallback-from"], "gpt-4.1");
        assert_eq!(response.headers()["x-sluice-deployment"], "small");
    }
    assert_eq!(
        big.calls(),
        1,
        "the throttled model is skipped after its 429"
    );
    assert_eq!(
        small.last().body["model"],
        "gpt-4.1-mini",
        "the body names the serving model"
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains(r#"sluice_fallbacks_total{from="gpt-4.1",to="gpt-4.1-mini"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_model_whose_attempts_all_fail_falls_back_in_the_same_request() {
    let (big, small, fallback) = throttled_with_fallback().await;
    // Not throttled: failing. Nothing marks `big` unusable before the call,
    // so the fallback must come after its attempts, within the request.
    big.set_default(Behavior::server_error());
    let gateway = TestGateway::start(&format!(
        "{}[retry]\nmax_attempts = 2\nbase_delay = \"1ms\"\n{fallback}",
        open("")
    ))
    .await;
    let response = gateway
        .post("/v1/chat/completions", None, &chat("gpt-4.1"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-fallback-from"], "gpt-4.1");
    assert_eq!(response.headers()["x-sluice-attempts"], "3");
    assert_eq!(big.calls(), 2, "gpt-4.1 got its max_attempts first");
    assert_eq!(small.calls(), 1);
}

#[tokio::test]
async fn nothing_usable_is_a_503_that_says_when_to_come_back() {
    let only = FakeUpstream::start("only").await;
    only.push(rate_limited("retry-after", "2"));
    let gateway = TestGateway::start(&format!(
        "{}{}",
        open("[retry]\nmax_retry_after = \"1s\""),
        deployment("only", &only, "")
    ))
    .await;
    let response = ask(&gateway).await;
    assert_eq!(
        response.status(),
        429,
        "a hint longer than max_retry_after is passed on, not waited out"
    );
    let response = ask(&gateway).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let ready = gateway
        .client
        .get(gateway.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "no deployment is usable: not ready");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["usable_deployments"], 0);
    let millis: u64 = response.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1500..=2000).contains(&millis), "{millis}");
    let error = error_of(response).await;
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["code"], "no_deployment_available");
    assert_eq!(only.calls(), 1);
}

#[tokio::test]
async fn the_only_deployment_is_retried_after_a_short_hint() {
    let only = FakeUpstream::start("only").await;
    only.push(rate_limited("retry-after-ms", "300"));
    let gateway =
        TestGateway::start(&format!("{}{}", open(""), deployment("only", &only, ""))).await;
    let started = Instant::now();
    let response = ask(&gateway).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-attempts"], "2");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited out the hint"
    );
}

/// A call that finds the only deployment throttled for a moment (another
/// call's 429 with a short hint) waits for it rather than being refused,
/// above the batch class; a batch-class call is refused at once (its runner
/// retries it after the hint).
#[tokio::test]
async fn a_first_try_waits_out_a_short_throttle_above_the_batch_class() {
    let only = FakeUpstream::start("only").await;
    only.push(rate_limited("retry-after-ms", "400"));
    let gateway =
        TestGateway::start(&format!("{}{}", open(""), deployment("only", &only, ""))).await;
    let with_class = |class: &'static str| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .header("x-sluice-priority", class)
            .json(&chat("gpt-4o"))
            .send()
    };
    let throttling = tokio::spawn(with_class("standard"));
    // The first call's 429 has throttled the deployment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while only.calls() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let batch = with_class("batch").await.unwrap();
    assert_eq!(batch.status(), 503, "a batch-class call is not held");
    let started = Instant::now();
    let realtime = with_class("realtime").await.unwrap();
    assert_eq!(
        realtime.status(),
        200,
        "a realtime call waits out the throttle"
    );
    assert_eq!(realtime.headers()["x-sluice-attempts"], "1");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(throttling.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn no_retry_once_a_stream_has_started() {
    let (first, second, gateway) = two_groups("first", "second").await;
    first.push(Behavior::BreakAfter(vec![chunk("partial")]));
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    let response = gateway.post("/v1/chat/completions", None, &body).await;
    let text = response.text().await.unwrap();
    assert!(text.starts_with(&chunk("partial")));
    assert!(
        text.contains("\"error\"") && !text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(second.calls(), 0, "bytes reached the client: no retry");

    // Before any byte, a failed stream does fail over.
    first.push(Behavior::Reply {
        status: 500,
        headers: vec![],
        body: "{}".into(),
    });
    second.push(Behavior::Stream {
        events: vec![chunk("ok"), done()],
        interval: Duration::ZERO,
        gate: None,
    });
    let response = gateway.post("/v1/chat/completions", None, &body).await;
    assert_eq!(response.headers()["x-sluice-deployment"], "second");
    assert_eq!(response.text().await.unwrap(), chunk("ok") + &done());
}

#[tokio::test]
async fn prefix_affinity_keeps_a_prompt_on_one_upstream_and_cached_tokens_are_counted() {
    let upstreams = [
        FakeUpstream::start("one").await,
        FakeUpstream::start("two").await,
        FakeUpstream::start("three").await,
    ];
    let gateway = TestGateway::start(&format!(
        "{}[models.\"gpt-4o\"]\nstrategy = \"prefix_affinity\"\n{}{}{}",
        open(""),
        deployment("one", &upstreams[0], ""),
        deployment("two", &upstreams[1], ""),
        deployment("three", &upstreams[2], "")
    ))
    .await;
    let mut homes = std::collections::HashSet::new();
    for key in 0..30 {
        let mut body = chat("gpt-4o");
        body["prompt_cache_key"] = format!("tenant-{key}").into();
        let mut served = std::collections::HashSet::new();
        for _ in 0..5 {
            let response = gateway.post("/v1/chat/completions", None, &body).await;
            served.insert(
                response.headers()["x-sluice-deployment"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(served.len(), 1, "one key, one upstream");
        homes.extend(served);
    }
    assert_eq!(homes.len(), 3, "different keys spread over the deployments");
    let metrics = gateway.metrics().await;
    let cached: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_tokens_total") && l.contains(r#"type="cached""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        cached,
        150 * 3,
        "cached prompt tokens from upstream usage are counted"
    );
}

#[tokio::test]
async fn admin_api_needs_its_token_and_is_off_without_one() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway =
        TestGateway::start(&format!("{}{}", open(""), deployment("oa", &upstream, ""))).await;
    let url = gateway.url("/admin/deployments");
    assert_eq!(gateway.client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        gateway
            .client
            .get(&url)
            .bearer_auth("wrong-token-0000000")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Presented like an API key: lowercase `bearer`, or the `api-key` header.
    for (name, value) in [
        ("authorization", format!("bearer {ADMIN}")),
        ("api-key", ADMIN.to_owned()),
    ] {
        let response = gateway
            .client
            .get(&url)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
    let view = admin_view(&gateway, "oa").await;
    assert_eq!(view["usable"], true);
    assert_eq!(view["circuit"], "closed");
    assert!(view["in_flight"].is_number() && view["ewma_latency_ms"].is_number());

    let closed = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{}",
        deployment("oa", &upstream, "")
    ))
    .await;
    let response = closed
        .client
        .get(closed.url("/admin/deployments"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "no token configured, no admin API");
}

#[tokio::test]
async fn chaos_three_deployments_zero_client_errors_within_budget() {
    let upstreams = [
        FakeUpstream::start("chaos-a").await,
        FakeUpstream::start("chaos-b").await,
        FakeUpstream::start("steady").await,
    ];
    upstreams[0].set_default(Behavior::Chaos { rate: 0.3 });
    upstreams[1].set_default(Behavior::Chaos { rate: 0.3 });
    let gateway = TestGateway::start(&format!(
        "{}{}{}{}",
        open("[retry]\nmax_attempts = 4\nbudget_ratio = 0.5\nbudget_min_per_sec = 10\nbase_delay = \"5ms\"\nmax_delay = \"20ms\""),
        deployment("chaos-a", &upstreams[0], "timeout = \"150ms\""),
        deployment("chaos-b", &upstreams[1], "timeout = \"150ms\""),
        deployment("steady", &upstreams[2], "timeout = \"150ms\""),
    ))
    .await;
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(0..2000)
        .map(|_| async { ask(&gateway).await.status().as_u16() })
        .buffer_unordered(40)
        .collect()
        .await;
    let errors = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(errors, 0, "client-visible errors: {errors}");
    let calls: usize = upstreams.iter().map(FakeUpstream::calls).sum();
    let floor = 10.0 * (1.0 + started.elapsed().as_secs_f64().ceil());
    let budget = (2000.0 * 1.5 + floor) as usize;
    assert!(
        calls <= budget,
        "{calls} upstream calls for 2000 requests (budget {budget})"
    );
}

#[tokio::test]
async fn health_probes_close_an_open_circuit_without_user_traffic() {
    let sick = FakeUpstream::start("sick").await;
    let steady = FakeUpstream::start("steady").await;
    sick.set_default(Behavior::Reply {
        status: 500,
        headers: vec![],
        body: "{}".into(),
    });
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        open(
            "[circuit_breaker]\nfailure_threshold = 2\nrecovery_timeout = \"1h\"\nsuccess_threshold = 2\n[health_probe]\nenabled = true\ninterval = \"100ms\"\ntimeout = \"1s\""
        ),
        deployment("sick", &sick, "priority = 0"),
        deployment("steady", &steady, "priority = 1")
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(ask(&gateway).await.status(), 200);
    }
    assert_eq!(admin_view(&gateway, "sick").await["circuit"], "open");
    let user_calls = || {
        sick.recorded()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    let before = user_calls();

    sick.set_default(Behavior::Echo);
    let mut closed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if admin_view(&gateway, "sick").await["circuit"] == "closed" {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "probes closed the circuit (recovery_timeout is an hour)"
    );
    assert_eq!(user_calls(), before, "no user request was risked on it");
    let probe = sick
        .recorded()
        .into_iter()
        .find(|r| r.method == "GET")
        .unwrap();
    assert_eq!(probe.path, "/models");
    assert_eq!(ask(&gateway).await.headers()["x-sluice-deployment"], "sick");
}
