//! OpenAI clients on an Anthropic deployment (`provider = "anthropic"`),
//! against a fake that speaks Anthropic's JSON and SSE: what it receives,
//! the answer as a chat completion (async-openai, the Rust OpenAI SDK),
//! streams in random spellings and splits with their usage, tools, errors,
//! 529 as push-back with failover, and rate-limit headers read.
#![allow(clippy::disallowed_methods, reason = "tests own their tasks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions,
    CreateChatCompletionRequestArgs,
};
use common::gateway::deployment;
use common::spelling::Spelling;
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-anthropic-key-0001";
const ADMIN: &str = "admin-token-anthropic";

fn anthropic(name: &str, upstream: &FakeUpstream) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nprovider = \"anthropic\"\nbase_url = \"{}\"\n\
         api_key = \"sk-ant-test\"\nmodels = [\"gpt-4o\"]\nmodel_map = {{ \"gpt-4o\" = \"claude-sonnet-4-5\" }}\n",
        upstream.base_url()
    )
}

async fn gateway(deployments: &str, extra: &str) -> (TestGateway, Client<OpenAIConfig>) {
    let gateway = TestGateway::start(&format!(
        "[admin]\ntoken = \"{ADMIN}\"\n{extra}\n{deployments}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n"
    ))
    .await;
    let config = OpenAIConfig::new()
        .with_api_base(format!("http://{}/v1", gateway.addr))
        .with_api_key(KEY);
    (gateway, Client::with_config(config))
}

fn message_json(content: Value, stop: &str) -> String {
    json!({"id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": content, "stop_reason": stop, "stop_sequence": null,
           "usage": {"input_tokens": 12, "output_tokens": 6, "cache_read_input_tokens": 3,
                     "cache_creation_input_tokens": 0}})
    .to_string()
}

fn reply(body: String) -> Behavior {
    Behavior::Reply {
        status: 200,
        headers: vec![("content-type", "application/json".to_owned())],
        body,
    }
}

fn chat(stream: bool) -> async_openai::types::chat::CreateChatCompletionRequest {
    let message = ChatCompletionRequestUserMessageArgs::default()
        .content("Say hello")
        .build()
        .unwrap();
    let mut builder = CreateChatCompletionRequestArgs::default();
    builder.model("gpt-4o").messages(vec![message.into()]);
    if stream {
        builder
            .stream(true)
            .stream_options(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            });
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn a_chat_call_is_a_messages_call_upstream_and_a_completion_back() {
    let upstream = FakeUpstream::start("claude").await;
    let (_gateway, client) = gateway(&anthropic("claude", &upstream), "").await;
    upstream.push(reply(message_json(
        json!([{"type": "text", "text": "Hello!"}]),
        "end_turn",
    )));
    let answer = client.chat().create(chat(false)).await.unwrap();
    assert_eq!(answer.choices[0].message.content.as_deref(), Some("Hello!"));
    let usage = answer.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (15, 6));

    let sent = upstream.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "sk-ant-test");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(!sent.headers.contains_key("authorization"));
    assert_eq!(sent.body["model"], "claude-sonnet-4-5");
    assert_eq!(sent.body["max_tokens"], 4096);
    assert_eq!(sent.body["messages"][0]["content"][0]["text"], "Say hello");
}

fn anthropic_stream(words: &[&str]) -> Vec<String> {
    let event = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap()
        )
    };
    let mut events = vec![
        event(
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        ),
        event(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event(json!({"type": "ping"})),
    ];
    for word in words {
        events.push(event(json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": word}})));
    }
    events.push(event(json!({"type": "content_block_stop", "index": 0})));
    events.push(event(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": 5}}),
    ));
    events.push(event(json!({"type": "message_stop"})));
    events
}

/// Anthropic's stream in random spellings and splits: the same chunks,
/// text, finish reason and usage reach the OpenAI client.
#[tokio::test]
async fn any_spelling_of_anthropics_stream_reaches_the_client_as_chunks() {
    let upstream = FakeUpstream::start("claude").await;
    let (_gateway, client) = gateway(&anthropic("claude", &upstream), "").await;
    let words = ["Hel", "lo ", "wörld"];
    let mut rng = fastrand::Rng::with_seed(11);
    for seed in 0..10u64 {
        let spelling = if seed == 0 {
            Spelling::default()
        } else {
            Spelling::random(&mut rng)
        };
        upstream.push(Behavior::spelled(&anthropic_stream(&words), spelling, seed));
        let mut stream = client.chat().create_stream(chat(true)).await.unwrap();
        let (mut text, mut finish, mut usage) = (String::new(), None, None);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for choice in chunk.choices {
                text.push_str(choice.delta.content.as_deref().unwrap_or_default());
                finish = finish.or(choice.finish_reason);
            }
            usage = usage.or(chunk.usage);
        }
        assert_eq!(text, words.concat(), "seed {seed}");
        assert!(finish.is_some(), "seed {seed}");
        let usage = usage.unwrap_or_else(|| panic!("seed {seed}: no usage chunk"));
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 5));
        assert_eq!(upstream.last().body["stream"], true);
    }
}

#[tokio::test]
async fn tools_go_out_as_anthropic_tools_and_come_back_as_tool_calls() {
    let upstream = FakeUpstream::start("claude").await;
    let (gateway, _client) = gateway(&anthropic("claude", &upstream), "").await;
    let content = json!([{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]);
    upstream.push(reply(message_json(content, "tool_use")));
    let body = json!({
        "model": "gpt-4o", "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    });
    let response = gateway.post("/v1/chat/completions", Some(KEY), &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let sent = upstream.last().body;
    assert_eq!(sent["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
}

#[tokio::test]
async fn errors_are_openai_shaped_and_529_fails_over() {
    let claude = FakeUpstream::start("claude").await;
    let backup = FakeUpstream::start("backup").await;
    let deployments = anthropic("claude", &claude) + &deployment("backup", &backup, "priority = 1");
    let (gateway, client) = gateway(&deployments, "").await;

    claude.push(Behavior::Reply {
        status: 400,
        headers: vec![("content-type", "application/json".to_owned())],
        body:
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: bad"}}"#
                .into(),
    });
    let refused = gateway
        .post(
            "/v1/chat/completions",
            Some(KEY),
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["message"], "messages: bad");
    assert_eq!(body["error"]["code"], "invalid_request_error");

    // Overloaded: push-back, so the call goes to the next deployment.
    claude.push(Behavior::Reply {
        status: 529,
        headers: vec![("content-type", "application/json".to_owned())],
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            .into(),
    });
    let answer = client.chat().create(chat(false)).await.unwrap();
    assert!(answer.choices[0].message.content.is_some());
    assert_eq!(backup.calls(), 1, "failed over to the OpenAI deployment");

    // What Messages cannot express is a 400 before any call.
    let calls = claude.calls();
    let n2 = json!({"model": "gpt-4o", "n": 2, "messages": [{"role": "user", "content": "x"}]});
    let response = gateway.post("/v1/chat/completions", Some(KEY), &n2).await;
    assert_eq!(response.status(), 400);
    assert_eq!(claude.calls(), calls);
}

#[tokio::test]
async fn a_reported_zero_remaining_takes_the_deployment_out() {
    let upstream = FakeUpstream::start("claude").await;
    let (gateway, client) = gateway(&anthropic("claude", &upstream), "").await;
    // No retry-after: the reset time says how long the deployment is out.
    let reset = std::time::SystemTime::now() + Duration::from_secs(30);
    upstream.push(Behavior::Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("anthropic-ratelimit-requests-remaining", "0".to_owned()),
            (
                "anthropic-ratelimit-requests-reset",
                sluice::engines::metering::rfc3339(reset),
            ),
        ],
        body: message_json(json!([{"type": "text", "text": "ok"}]), "end_turn"),
    });
    client.chat().create(chat(false)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let deployments = gateway.get_json("/admin/deployments", Some(ADMIN)).await;
        let claude = &deployments["data"][0];
        if claude["usable"] == false {
            assert_eq!(claude["remaining_requests"], 0, "{claude}");
            let out_for = claude["usable_in_ms"].as_u64().unwrap();
            assert!((25_000..=30_000).contains(&out_for), "{claude}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{deployments}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
