//! The degradation ladder end to end: a model whose deployments all fail
//! climbs to cached-only and static answers after its thresholds, comes
//! back to full service when a deployment is usable, and the operator can
//! force and clear a level (maintenance included).
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

use common::gateway::deployment;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";

fn config(upstream: &FakeUpstream, recovery: &str) -> String {
    format!(
        "[auth]\nrequired = false\n[admin]\ntoken = \"{ADMIN}\"\n[cache]\nenabled = true\n\
         [circuit_breaker]\nfailure_threshold = 1\nsuccess_threshold = 1\nrecovery_timeout = \"{recovery}\"\n\
         [retry]\nmax_attempts = 1\n\
         [degradation]\ncached_after = \"200ms\"\nstatic_after = \"600ms\"\n\
         [[static_responses]]\nkeywords = [\"refund\"]\ncontent = \"Refunds: see example.com/refunds. {{model}} is back in about {{retry_after}}s.\"\n{}",
        deployment("oa", upstream, "")
    )
}

fn ask(text: &str) -> Value {
    json!({"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

async fn chat(gateway: &TestGateway, body: &Value) -> reqwest::Response {
    gateway.post("/v1/chat/completions", None, body).await
}

async fn level(gateway: &TestGateway) -> Value {
    let models = gateway.get_json("/admin/models", Some(ADMIN)).await;
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .cloned()
        .unwrap()
}

/// Polls `/admin/models` until gpt-4o is at `want`, within 5s.
async fn reach(gateway: &TestGateway, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = level(gateway).await;
        if seen["level"] == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "level {want} not reached: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes every upstream call fail, sees one call fail, and waits for the
/// model to reach level 2 (cached only).
async fn fail_to_cached_only(upstream: &FakeUpstream, gateway: &TestGateway) {
    upstream.set_default(Behavior::server_error());
    let failed = chat(gateway, &ask("fails")).await;
    assert!(failed.status().is_server_error());
    reach(gateway, 2).await;
}

async fn force(gateway: &TestGateway, model: &str, level: Value) -> reqwest::Response {
    gateway
        .post(
            &format!("/admin/models/{model}/level"),
            Some(ADMIN),
            &json!({ "level": level }),
        )
        .await
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The text of a streamed static answer, after checking it is one.
async fn static_stream(answer: reqwest::Response) -> String {
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "x-sluice-degraded"), Some("static"));
    let kind = header(&answer, "content-type").unwrap();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    answer.text().await.unwrap()
}

#[tokio::test]
async fn failing_deployments_climb_to_cached_then_static_answers() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "60s")).await;
    assert_eq!(chat(&gateway, &ask("What is Sluice?")).await.status(), 200);
    assert_eq!(level(&gateway).await["level"], 0);

    fail_to_cached_only(&upstream, &gateway).await;
    let calls = upstream.calls();

    // Level 2: the cache answers, a miss is refused with a retry-after.
    let hit = chat(&gateway, &ask("What is Sluice?")).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-sluice-degraded"), Some("cached"));
    let miss = chat(&gateway, &ask("Something new")).await;
    assert_eq!(miss.status(), 503);
    assert!(header(&miss, "retry-after").is_some());
    let error = common::gateway::error_of(miss).await;
    assert_eq!(error["code"], "service_degraded");

    // Level 3: a matching static answer, whole and streamed; others still 503.
    reach(&gateway, 3).await;
    let answer = chat(&gateway, &ask("I want a REFUND please")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "x-sluice-degraded"), Some("static"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.starts_with("Refunds: see example.com/refunds. gpt-4o"),
        "{text}"
    );

    let mut streamed = ask("refund?");
    streamed["stream"] = json!(true);
    let answer = chat(&gateway, &streamed).await;
    let text = static_stream(answer).await;
    assert!(
        text.contains("chat.completion.chunk") && text.contains("Refunds"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Never cached: the same question again is answered statically again.
    let again = chat(&gateway, &ask("I want a REFUND please")).await;
    assert_eq!(header(&again, "x-sluice-degraded"), Some("static"));
    assert_eq!(header(&again, "x-sluice-cache"), Some("miss"));

    let unmatched = chat(&gateway, &ask("Something else")).await;
    assert_eq!(unmatched.status(), 503);
    assert_eq!(
        upstream.calls(),
        calls,
        "nothing degraded reached the upstream"
    );
    assert!(
        gateway
            .metrics()
            .await
            .contains("sluice_degradation_level{model=\"gpt-4o\"} 3")
    );
}

#[tokio::test]
async fn a_usable_deployment_brings_the_level_back_to_zero() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "400ms")).await;
    fail_to_cached_only(&upstream, &gateway).await;
    assert_eq!(chat(&gateway, &ask("a miss")).await.status(), 503);

    upstream.set_default(Behavior::Echo);
    // Once the circuit lets a trial through, the call reaches the upstream,
    // succeeds, closes the circuit and the level returns to 0.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = chat(&gateway, &ask("are you back?")).await;
        if response.status() == 200 && header(&response, "x-sluice-degraded").is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = level(&gateway).await;
    assert_eq!(seen["level"], 0, "{seen}");
    assert_eq!(seen["health"], "ready");
}

#[tokio::test]
async fn the_operator_forces_maintenance_and_clears_it() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "60s")).await;

    let forced = force(&gateway, "gpt-4o", json!(4)).await;
    assert_eq!(forced.status(), 200);
    let forced: Value = forced.json().await.unwrap();
    assert_eq!(
        (forced["level"].clone(), forced["automatic_level"].clone()),
        (json!(4), json!(0))
    );

    let refused = chat(&gateway, &ask("hello")).await;
    assert_eq!(refused.status(), 503);
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(
        common::gateway::error_of(refused).await["code"],
        "maintenance"
    );
    assert_eq!(level(&gateway).await["forced_level"], 4);
    assert!(
        gateway
            .metrics()
            .await
            .contains("sluice_degradation_level{model=\"gpt-4o\"} 4")
    );

    // Forced static on a healthy model: no upstream call.
    assert_eq!(force(&gateway, "gpt-4o", json!(3)).await.status(), 200);
    let answer = chat(&gateway, &ask("refund")).await;
    assert_eq!(header(&answer, "x-sluice-degraded"), Some("static"));
    assert_eq!(upstream.calls(), 0);

    assert_eq!(force(&gateway, "gpt-4o", Value::Null).await.status(), 200);
    let served = chat(&gateway, &ask("hello")).await;
    assert_eq!(served.status(), 200);
    assert!(header(&served, "x-sluice-degraded").is_none());
    let seen = level(&gateway).await;
    assert_eq!(
        (seen["level"].clone(), seen["forced_level"].clone()),
        (json!(0), Value::Null)
    );

    assert_eq!(force(&gateway, "gpt-4o", json!(9)).await.status(), 400);
    assert_eq!(force(&gateway, "nope", json!(1)).await.status(), 404);
    let anonymous = gateway
        .client
        .post(gateway.url("/admin/models/gpt-4o/level"))
        .json(&json!({"level": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_reload_keeps_a_forced_level() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = std::env::temp_dir().join(format!("sluice-ladder-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    let toml = format!(
        "[server]\nwatch_config = false\n[usage]\nstore = \"none\"\n[batch]\nstore = \"none\"\n{}",
        config(&upstream, "60s").replace("[admin]\n", "[admin]\nkeys_store = \"none\"\n")
    );
    std::fs::write(&path, &toml).unwrap();
    let gateway = TestGateway::start_file(&path).await;
    assert_eq!(force(&gateway, "gpt-4o", json!(4)).await.status(), 200);

    // A new snapshot: another static answer.
    std::fs::write(
        &path,
        format!("{toml}[[static_responses]]\ncontent = \"Back soon.\"\n"),
    )
    .unwrap();
    gateway.reload(ADMIN).await;
    assert_eq!(level(&gateway).await["forced_level"], 4);
    assert_eq!(chat(&gateway, &ask("hello")).await.status(), 503);
}

/// `degraded_max_output_tokens` clamps (or sets) a call's max output tokens
/// while the model is degraded, and not at level 0.
#[tokio::test]
async fn degraded_calls_get_fewer_output_tokens() {
    let upstream = FakeUpstream::start("oa").await;
    let toml = format!(
        "{}\n[models.gpt-4o]\ndegraded_max_output_tokens = 50\n",
        config(&upstream, "60s")
    );
    let gateway = TestGateway::start(&toml).await;
    let with_max = |text: &str, field: &str, max: u64| {
        let mut body = ask(text);
        body[field] = json!(max);
        body
    };

    assert_eq!(
        chat(&gateway, &with_max("a", "max_tokens", 1000))
            .await
            .status(),
        200
    );
    assert_eq!(
        upstream.last().body["max_tokens"],
        1000,
        "level 0: as asked"
    );

    assert_eq!(force(&gateway, "gpt-4o", json!(1)).await.status(), 200);
    assert_eq!(
        chat(&gateway, &with_max("b", "max_tokens", 1000))
            .await
            .status(),
        200
    );
    assert_eq!(upstream.last().body["max_tokens"], 50);
    let body = with_max("c", "max_completion_tokens", 20);
    assert_eq!(chat(&gateway, &body).await.status(), 200);
    assert_eq!(
        upstream.last().body["max_completion_tokens"],
        20,
        "under the cap: kept"
    );
    assert_eq!(chat(&gateway, &ask("d")).await.status(), 200);
    assert_eq!(
        upstream.last().body["max_completion_tokens"],
        50,
        "absent: set"
    );
    let responses = gateway
        .post(
            "/v1/responses",
            None,
            &json!({"model": "gpt-4o", "input": "e", "max_output_tokens": 4000}),
        )
        .await;
    assert_eq!(responses.status(), 200);
    assert_eq!(upstream.last().body["max_output_tokens"], 50);

    assert_eq!(force(&gateway, "gpt-4o", Value::Null).await.status(), 200);
    assert_eq!(
        chat(&gateway, &with_max("f", "max_tokens", 1000))
            .await
            .status(),
        200
    );
    assert_eq!(upstream.last().body["max_tokens"], 1000, "back at level 0");
}

/// `stale_for`: past its TTL an entry answers only calls of a degraded model.
#[tokio::test]
async fn stale_entries_answer_only_degraded_calls() {
    let upstream = FakeUpstream::start("oa").await;
    let toml = config(&upstream, "60s").replace(
        "[cache]\nenabled = true\n",
        "[cache]\nenabled = true\nttl = \"300ms\"\nstale_for = \"1h\"\n",
    );
    let gateway = TestGateway::start(&toml).await;
    for question in ["asked again", "asked while degraded"] {
        assert_eq!(chat(&gateway, &ask(question)).await.status(), 200);
    }
    // Both entries are stored off the request path: wait for them to hit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while header(&chat(&gateway, &ask("asked again")).await, "x-sluice-cache") != Some("hit") {
        assert!(tokio::time::Instant::now() < deadline, "never cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let calls = upstream.calls();

    // Not degraded: a stale entry is a miss, and the upstream answers anew.
    let fresh = chat(&gateway, &ask("asked again")).await;
    assert_eq!(fresh.status(), 200);
    assert_eq!(header(&fresh, "x-sluice-cache"), Some("miss"));
    assert_eq!(upstream.calls(), calls + 1);

    // Degraded: the stale entry answers, marked.
    assert_eq!(force(&gateway, "gpt-4o", json!(2)).await.status(), 200);
    let stale = chat(&gateway, &ask("asked while degraded")).await;
    assert_eq!(stale.status(), 200);
    assert_eq!(header(&stale, "x-sluice-cache"), Some("stale"));
    assert_eq!(header(&stale, "x-sluice-degraded"), Some("cached"));
    let never = chat(&gateway, &ask("never asked")).await;
    assert_eq!(never.status(), 503);
    assert_eq!(
        upstream.calls(),
        calls + 1,
        "nothing degraded reached the upstream"
    );
}

/// Level 3 answers `/v1/responses` as a Responses object, whole and streamed.
#[tokio::test]
async fn static_answers_for_the_responses_api() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "60s")).await;
    assert_eq!(force(&gateway, "gpt-4o", json!(3)).await.status(), 200);

    let ask = json!({"model": "gpt-4o", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "A refund, please"}]}]});
    let answer = gateway.post("/v1/responses", None, &ask).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "x-sluice-degraded"), Some("static"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["usage"]["total_tokens"], 0);
    let message = &body["output"][0];
    assert_eq!(
        (&message["type"], &message["role"]),
        (&json!("message"), &json!("assistant"))
    );
    assert_eq!(message["content"][0]["type"], "output_text");
    let text = message["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Refunds: see example.com/refunds. gpt-4o"),
        "{text}"
    );

    let streamed = json!({"model": "gpt-4o", "input": "refund?", "stream": true});
    let answer = gateway.post("/v1/responses", None, &streamed).await;
    let text = static_stream(answer).await;
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert!(kinds.contains(&"response.output_text.delta"), "{text}");
    assert!(text.contains("Refunds: see example.com/refunds."), "{text}");
    assert!(!text.contains("[DONE]"));
    let mut data = text.lines().filter_map(|line| line.strip_prefix("data: "));
    let completed: Value = serde_json::from_str(data.next_back().unwrap()).unwrap();
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(completed["sequence_number"], json!(kinds.len() - 1));

    let unmatched = json!({"model": "gpt-4o", "input": "hello"});
    let refused = gateway.post("/v1/responses", None, &unmatched).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(upstream.calls(), 0);
}
