//! Anthropic's Messages API in front of an OpenAI-compatible deployment:
//! what the upstream receives, the answer translated back whole and as
//! Anthropic's events (over random spellings and chunk splits of the
//! upstream's stream), a stream that breaks, errors in Anthropic's shape,
//! and the stages applying (keys, the ledger).
#![allow(clippy::disallowed_methods, reason = "tests own their tasks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::time::Duration;

use common::fake_upstream::{chunk, done};
use common::gateway::deployment;
use common::spelling::Spelling;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const KEY: &str = "sk-messages-key-0001";

async fn gateway(upstream: &FakeUpstream, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "{extra}\n{}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        deployment("oa", upstream, "")
    ))
    .await
}

async fn messages(gateway: &TestGateway, key: &str, body: &Value) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn hello(stream: bool) -> Value {
    json!({"model": "gpt-4o", "max_tokens": 32, "stream": stream, "system": "Be brief.",
           "messages": [{"role": "user", "content": "Say hello"}]})
}

/// The events of an Anthropic stream, in order, each checked to be named
/// by its `type`; keep-alive comments (passed on in the upstream's line
/// ends) are skipped.
fn events(text: &str) -> Vec<Value> {
    let lines: Vec<&str> = text
        .split(['\r', '\n'])
        .filter(|line| !line.is_empty() && !line.starts_with(':'))
        .collect();
    lines
        .chunks(2)
        .map(|pair| {
            let name = pair[0].strip_prefix("event: ").expect(pair[0]);
            let data = pair[1].strip_prefix("data: ").expect(pair[1]);
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(name, data["type"], "{pair:?}");
            data
        })
        .collect()
}

#[tokio::test]
async fn a_message_is_a_chat_completion_upstream_and_a_message_back() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway(&upstream, "").await;
    let response = messages(&gateway, KEY, &hello(false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-sluice-deployment"));
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(message["stop_reason"], "end_turn");

    let sent = upstream.last();
    assert!(sent.path.ends_with("/chat/completions"), "{}", sent.path);
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent.body["max_tokens"], 32);
    for header in ["x-api-key", "anthropic-version"] {
        assert!(!sent.headers.contains_key(header), "{header} went upstream");
    }
}

/// The upstream's stream, in random spellings and cut at random places,
/// always becomes the same Anthropic events and text.
#[tokio::test]
async fn any_spelling_and_split_of_the_stream_translates_alike() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway(&upstream, "").await;
    let words = ["Hel", "lo, ", "wörld", "!"];
    let mut canonical: Vec<String> = words.iter().map(|word| chunk(word)).collect();
    let finish = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}});
    canonical.push(format!("data: {finish}\n\n"));
    canonical.push(format!("data: {usage}\n\n"));
    canonical.push(done());
    let mut rng = fastrand::Rng::with_seed(7);
    for seed in 0..12u64 {
        let spelling = if seed == 0 {
            Spelling::default()
        } else {
            Spelling::random(&mut rng)
        };
        upstream.push(Behavior::spelled(&canonical, spelling, seed));
        let response = messages(&gateway, KEY, &hello(true)).await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let all = events(&response.text().await.unwrap());
        let kinds: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds.first(),
            Some(&"message_start"),
            "seed {seed}: {kinds:?}"
        );
        assert_eq!(
            kinds.last(),
            Some(&"message_stop"),
            "seed {seed}: {kinds:?}"
        );
        let text: String = all
            .iter()
            .filter(|e| e["type"] == "content_block_delta")
            .map(|e| e["delta"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, words.concat(), "seed {seed}");
        let delta = all.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 4);
        assert_eq!(
            upstream.last().body["stream_options"]["include_usage"],
            true
        );
    }
}

#[tokio::test]
async fn a_stream_that_breaks_ends_with_an_error_event() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway(&upstream, "[retry]\nmax_attempts = 1\n").await;
    upstream.push(Behavior::BreakAfter(vec![chunk("Hel"), chunk("lo")]));
    let response = messages(&gateway, KEY, &hello(true)).await;
    assert_eq!(response.status(), 200);
    let all = events(&response.text().await.unwrap());
    let last = all.last().unwrap();
    assert_eq!(last["type"], "error", "{all:?}");
    assert_eq!(last["error"]["type"], "api_error");
    assert!(all.iter().all(|e| e["type"] != "message_stop"));
}

#[tokio::test]
async fn errors_come_in_anthropics_shape() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway(&upstream, "[retry]\nmax_attempts = 1\n").await;
    let kind = |body: &Value| body["error"]["type"].as_str().unwrap().to_owned();

    let wrong = messages(&gateway, "sk-not-a-key", &hello(false)).await;
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), kind(&body).as_str()),
        (Some("error"), "authentication_error")
    );

    let mut refused = hello(false);
    refused["top_k"] = json!(3);
    let response = messages(&gateway, KEY, &refused).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(kind(&body), "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("top_k"),
        "{body}"
    );

    let not_json = |key: &'static str| {
        let request = gateway
            .client
            .post(gateway.url("/v1/messages"))
            .header("x-api-key", key)
            .body("{oops");
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(not_json(KEY).await, 400);
    // The key is checked before the body is read.
    assert_eq!(not_json("sk-not-a-key").await, 401);

    upstream.push(Behavior::Reply {
        status: 429,
        headers: vec![("retry-after", "7".to_owned())],
        body: r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    });
    let limited = messages(&gateway, KEY, &hello(false)).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(kind(&limited.json().await.unwrap()), "rate_limit_error");

    // Nothing can serve (the only deployment failing, one attempt): 529.
    upstream.set_default(Behavior::Reset);
    let mut status = 0;
    for _ in 0..10 {
        let response = messages(&gateway, KEY, &hello(false)).await;
        status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status == 529 {
            assert_eq!(kind(&body), "overloaded_error");
            break;
        }
        assert_eq!(kind(&body), "api_error", "{body}");
    }
    assert_eq!(status, 529, "an open breaker is Anthropic's overloaded");
}

#[tokio::test]
async fn count_tokens_needs_a_key_and_counts_the_translated_prompt() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway(&upstream, "").await;
    let count = |key: &'static str, body: Value| {
        let request = gateway
            .client
            .post(gateway.url("/v1/messages/count_tokens"))
            .header("x-api-key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let short = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    let long =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi ".repeat(50)}]});
    let short: Value = count(KEY, short).await.json().await.unwrap();
    let long: Value = count(KEY, long).await.json().await.unwrap();
    assert!(short["input_tokens"].as_u64().unwrap() > 0, "{short}");
    assert!(long["input_tokens"].as_u64() > short["input_tokens"].as_u64());
    let anonymous = count("sk-wrong", json!({"model": "gpt-4o", "messages": []})).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(upstream.calls(), 0, "counting calls no upstream");
}

#[tokio::test]
async fn the_ledger_records_a_messages_call() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = common::process::TempDir::new("sluice-messages");
    let extra = format!(
        "[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"20ms\"\n[admin]\ntoken = \"admin-token-messages\"\n",
        dir.display()
    );
    let gateway = gateway(&upstream, &extra).await;
    assert_eq!(messages(&gateway, KEY, &hello(false)).await.status(), 200);
    let openai = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let chat = gateway
        .post("/v1/chat/completions", Some(KEY), &openai)
        .await;
    assert_eq!(chat.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let usage = gateway
            .get_json("/admin/usage?group_by=key", Some("admin-token-messages"))
            .await;
        if usage["data"][0]["requests"] == 2 {
            assert_eq!(usage["data"][0]["group"], "app");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{usage}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each row says which API the client called.
    let by_api = gateway
        .get_json("/admin/usage?group_by=api", Some("admin-token-messages"))
        .await;
    let mut apis: Vec<(String, u64)> = by_api["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["group"].as_str().unwrap().to_owned(),
                row["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    apis.sort();
    assert_eq!(
        apis,
        [("anthropic".to_owned(), 1), ("openai".to_owned(), 1)],
        "{by_api}"
    );
}

/// At level 4, a key that may queue its calls in maintenance still gets an
/// answer it can read: Messages calls are not queued as OpenAI jobs.
#[tokio::test]
async fn maintenance_is_overloaded_even_for_a_queueing_key() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = common::process::TempDir::new("sluice-messages-maint");
    let gateway = TestGateway::start(&format!(
        "[admin]\ntoken = \"admin-token-messages\"\n[batch]\nstore = \"sqlite:{0}/jobs.sqlite\"\nfiles_dir = \"{0}/files\"\n\
         {1}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\nqueue_in_maintenance = true\n",
        dir.display(),
        deployment("oa", &upstream, "")
    ))
    .await;
    let level = json!({"level": 4});
    let forced = gateway
        .post(
            "/admin/models/gpt-4o/level",
            Some("admin-token-messages"),
            &level,
        )
        .await;
    assert_eq!(forced.status(), 200);
    let response = messages(&gateway, KEY, &hello(false)).await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
}

/// The cache serves a Messages call as it serves the chat call it becomes:
/// the same question twice reaches the upstream once.
#[tokio::test]
async fn the_cache_answers_a_repeated_message() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = gateway(&upstream, "[cache]\nenabled = true\n").await;
    let mut ask = hello(false);
    ask["temperature"] = json!(0);
    let first = messages(&gateway, KEY, &ask).await;
    assert_eq!(first.headers()["x-sluice-cache"], "miss");
    let first: Value = first.json().await.unwrap();
    let second = messages(&gateway, KEY, &ask).await;
    assert_eq!(second.headers()["x-sluice-cache"], "hit");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["content"], second["content"]);
    assert_eq!(upstream.calls(), 1);
}
