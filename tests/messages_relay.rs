//! Anthropic clients on an Anthropic deployment: the Messages call is sent
//! as it came and its answer (whole, as events in any spelling and split,
//! or an error) comes back byte for byte, fields a chat completion cannot
//! say included; usage, cache reads included, is metered from Anthropic's
//! own shapes; 529 fails over, and a call only Anthropic can serve is
//! refused by name on a deployment that is not Anthropic's.
#![allow(clippy::disallowed_methods, reason = "tests own their tasks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::time::Duration;

use common::gateway::deployment;
use common::spelling::Spelling;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const KEY: &str = "sk-relay-key-0001";
const ADMIN: &str = "admin-token-relay";
const MODEL: &str = "claude-sonnet-4-5";

fn anthropic(name: &str, upstream: &FakeUpstream, extra: &str) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nprovider = \"anthropic\"\nbase_url = \"{}\"\n\
         api_key = \"sk-ant-{name}\"\nmodels = [\"{MODEL}\"]\n{extra}\n",
        upstream.base_url()
    )
}

async fn gateway(deployments: &str, extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[admin]\ntoken = \"{ADMIN}\"\n{extra}\n{deployments}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n"
    ))
    .await
}

async fn send(gateway: &TestGateway, body: &str) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// A call a chat completion cannot say (extended thinking, `top_k`, a
/// document, an unknown future field), spelled with odd spacing.
fn thinking_call(stream: bool) -> String {
    format!(
        "{{ \"model\" : \"{MODEL}\", \"max_tokens\": 2048, \"stream\": {stream},\n \"top_k\": 5,\
         \"thinking\": {{\"type\": \"enabled\", \"budget_tokens\": 1024}},\
         \"future_field\": [1, 2.50, null],\
         \"messages\": [{{\"role\": \"user\", \"content\": [\
           {{\"type\": \"document\", \"source\": {{\"type\": \"text\", \"media_type\": \"text/plain\", \"data\": \"Tea is a drink.\"}}}},\
           {{\"type\": \"text\", \"text\": \"What is tea?\", \"cache_control\": {{\"type\": \"ephemeral\"}}}}]}}]}}"
    )
}

fn message_bytes() -> String {
    // Spacing and field order as a server might write them, a thinking
    // block with its signature, and cache counts in the usage.
    format!(
        "{{\"id\":\"msg_relay\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{MODEL}\",\
         \"content\":[{{\"type\":\"thinking\",\"thinking\":\"Tea...\",\"signature\":\"EqQBCgIYAhIM\"}},\
         {{\"type\":\"text\",\"text\":\"A drink.\"}}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\
         \"usage\":{{\"input_tokens\":12, \"output_tokens\":6,\"cache_read_input_tokens\":30,\
         \"cache_creation_input_tokens\":4,\"service_tier\":\"standard\"}}}}"
    )
}

fn reply(status: u16, body: String) -> Behavior {
    Behavior::Reply {
        status,
        headers: vec![("content-type", "application/json".to_owned())],
        body,
    }
}

/// The ledger's tokens for the key, once `requests` calls are in.
async fn metered(gateway: &TestGateway, requests: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let usage = gateway
            .get_json("/admin/usage?group_by=key", Some(ADMIN))
            .await;
        if usage["data"][0]["requests"] == requests {
            return usage["data"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{usage}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ledger(dir: &common::process::TempDir) -> String {
    format!(
        "[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"20ms\"\n",
        dir.display()
    )
}

#[tokio::test]
async fn a_message_goes_and_comes_back_byte_for_byte() {
    let upstream = FakeUpstream::start("claude").await;
    let dir = common::process::TempDir::new("sluice-relay");
    let gateway = gateway(&anthropic("claude", &upstream, ""), &ledger(&dir)).await;
    upstream.push(reply(200, message_bytes()));
    let call = thinking_call(false);
    let response = send(&gateway, &call).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "claude");
    assert_eq!(response.text().await.unwrap(), message_bytes());

    let sent = upstream.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(&sent.raw[..], call.as_bytes(), "the call's own bytes");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-claude");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        sent.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert!(!sent.headers.contains_key("authorization"));
    // Cache reads and writes are prompt tokens: 12 + 30 + 4.
    let row = metered(&gateway, 1).await;
    assert_eq!(
        (&row["prompt_tokens"], &row["completion_tokens"]),
        (&json!(46), &json!(6)),
        "{row}"
    );
}

/// Anthropic's events (`event:` names, usage in `message_start` and
/// `message_delta`).
fn events(input: u64, output: u64) -> Vec<String> {
    let event = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    };
    vec![
        event(
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message",
            "role": "assistant", "model": MODEL, "content": [], "stop_reason": null,
            "usage": {"input_tokens": input, "output_tokens": 1, "cache_read_input_tokens": 2}}}),
        ),
        event(json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}})),
        event(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Hmm, tea."}})),
        event(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}})),
        event(json!({"type": "content_block_stop", "index": 0})),
        event(json!({"type": "ping"})),
        event(json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "text", "text": ""}})),
        event(json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "A drink, wörld."}})),
        event(json!({"type": "content_block_stop", "index": 1})),
        event(
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
            "stop_sequence": null}, "usage": {"output_tokens": output}}),
        ),
        event(json!({"type": "message_stop"})),
    ]
}

/// Every spelling and split of the stream arrives as the upstream wrote
/// it, and its usage (input from `message_start`, output from
/// `message_delta`) is metered.
#[tokio::test]
async fn any_spelling_and_split_of_a_stream_is_relayed_as_written() {
    let upstream = FakeUpstream::start("claude").await;
    let dir = common::process::TempDir::new("sluice-relay-stream");
    let gateway = gateway(&anthropic("claude", &upstream, ""), &ledger(&dir)).await;
    let mut rng = fastrand::Rng::with_seed(26);
    let rounds = 12u64;
    for seed in 0..rounds {
        let spelling = match seed {
            0 => Spelling::default(),
            _ => Spelling::random(&mut rng),
        };
        let written = spelling.stream(&events(10, 7)).concat();
        upstream.push(Behavior::spelled(&events(10, 7), spelling, seed));
        let response = send(&gateway, &thinking_call(true)).await;
        assert_eq!(response.status(), 200, "seed {seed}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let received = response.text().await.unwrap();
        assert_eq!(received, written, "seed {seed} ({spelling:?})");
    }
    // 10 input + 2 cache reads, 7 output, for every call.
    let row = metered(&gateway, rounds).await;
    assert_eq!(row["prompt_tokens"], json!(12 * rounds), "{row}");
    assert_eq!(row["completion_tokens"], json!(7 * rounds), "{row}");
}

#[tokio::test]
async fn a_relayed_stream_that_breaks_ends_with_an_error_event() {
    let upstream = FakeUpstream::start("claude").await;
    let gateway = gateway(&anthropic("claude", &upstream, ""), "").await;
    let events = events(3, 3);
    upstream.push(Behavior::BreakAfter(events[..4].to_vec()));
    let response = send(&gateway, &thinking_call(true)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with(&events[..4].concat()), "{text}");
    let tail = &text[events[..4].concat().len()..];
    assert!(tail.contains("event: error\n"), "{tail}");
    let data = tail.split("data: ").nth(1).unwrap().trim();
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["type"], "error");
    assert!(error["error"]["message"].is_string(), "{error}");
}

#[tokio::test]
async fn the_deployments_errors_come_back_as_they_came() {
    let upstream = FakeUpstream::start("claude").await;
    let gateway = gateway(&anthropic("claude", &upstream, ""), "").await;
    let invalid = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\
                   \"message\":\"thinking.budget_tokens: must be less than max_tokens\"},\
                   \"request_id\":\"req_011\"}";
    upstream.push(reply(400, invalid.to_owned()));
    let response = send(&gateway, &thinking_call(false)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), invalid);
    // 529 is push-back: retried, then answered as Anthropic would.
    let overloaded =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
    for _ in 0..8 {
        upstream.push(reply(529, overloaded.to_owned()));
    }
    let response = send(&gateway, &thinking_call(false)).await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
}

/// A model served by an Anthropic deployment first and an OpenAI one after:
/// a call only Anthropic can serve stays on Anthropic deployments (529
/// when they are overloaded, never the OpenAI one), a call that translates
/// fails over and is translated.
#[tokio::test]
async fn failover_to_an_openai_deployment_translates_or_refuses_by_name() {
    let claude = FakeUpstream::start("claude").await;
    let backup = FakeUpstream::start("backup").await;
    let deployments = anthropic("claude", &claude, "")
        + &deployment("backup", &backup, "priority = 1")
            .replace("\"gpt-4o\"", &format!("\"{MODEL}\""));
    let gateway = gateway(&deployments, "").await;
    let overloaded =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
    for _ in 0..8 {
        claude.push(reply(529, overloaded.to_owned()));
    }
    let response = send(&gateway, &thinking_call(false)).await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    assert_eq!(backup.calls(), 0, "the OpenAI deployment is never sent it");

    claude.push(reply(529, overloaded.to_owned()));
    let plain = format!(
        "{{\"model\": \"{MODEL}\", \"max_tokens\": 16, \"messages\": [{{\"role\": \"user\", \"content\": \"Hi\"}}]}}"
    );
    let response = send(&gateway, &plain).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "backup");
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(backup.last().path, "/chat/completions");
}

/// The call is refused up front when no deployment of its model could
/// take it; a renamed model is renamed in the relayed bytes.
#[tokio::test]
async fn an_untranslatable_call_needs_an_anthropic_deployment() {
    let openai = FakeUpstream::start("oa").await;
    let claude = FakeUpstream::start("claude").await;
    let deployments = deployment("oa", &openai, "")
        + &anthropic(
            "claude",
            &claude,
            "model_map = { \"claude-sonnet-4-5\" = \"claude-sonnet-4-5-20250929\" }",
        );
    let gateway = gateway(&deployments, "").await;
    let response = send(&gateway, &thinking_call(false).replace(MODEL, "gpt-4o")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(openai.calls(), 0);

    claude.push(reply(200, message_bytes()));
    let response = send(&gateway, &thinking_call(false)).await;
    assert_eq!(response.status(), 200);
    let sent = claude.last().body;
    assert_eq!(sent["model"], "claude-sonnet-4-5-20250929");
    let mut asked: Value = serde_json::from_str(&thinking_call(false)).unwrap();
    asked["model"] = sent["model"].clone();
    assert_eq!(sent, asked, "only the model is renamed");
}

/// A key's `max_output_tokens` holds on a relayed call too: the relayed
/// bytes carry the lowered `max_tokens`, and nothing else changes.
#[tokio::test]
async fn a_keys_output_cap_holds_on_the_relayed_call() {
    let claude = FakeUpstream::start("claude").await;
    let gateway = TestGateway::start(&format!(
        "{}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\nmax_output_tokens = 100\n",
        anthropic("claude", &claude, "")
    ))
    .await;
    claude.push(reply(200, message_bytes()));
    let response = send(&gateway, &thinking_call(false)).await;
    assert_eq!(response.status(), 200);
    let sent = claude.last().body;
    assert_eq!(sent["max_tokens"], 100);
    let mut asked: Value = serde_json::from_str(&thinking_call(false)).unwrap();
    asked["max_tokens"] = 100.into();
    assert_eq!(sent, asked, "only max_tokens is lowered");
}
