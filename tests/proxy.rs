//! Forwarding to OpenAI and Azure: paths, queries, auth swap, model mapping,
//! and what passes back to the client.
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

use common::gateway::{chat, error_of};
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::json;

const KEY: &str = "sk-client-key-0001";

fn keys() -> String {
    format!("[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\norg = \"eng\"\n")
}

#[tokio::test]
async fn openai_forwarding_swaps_auth_and_keeps_body() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        r#"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}/v1"
        api_key = "sk-upstream-secret"
        models = ["gpt-4o"]
        {}"#,
        upstream.base_url(),
        keys()
    ))
    .await;

    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3});
    let response = gateway.post("/v1/chat/completions", Some(KEY), &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "oa");
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["x-upstream-name"], "oa");
    for hidden in ["openai-organization", "set-cookie"] {
        assert!(!response.headers().contains_key(hidden), "{hidden} leaked");
    }
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "from oa");

    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.query, None);
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream-secret");
    assert_eq!(seen.body, body, "the body goes upstream unchanged");
    let all_headers = format!("{:?}", seen.headers);
    assert!(
        !all_headers.contains(KEY),
        "the client key must never go upstream"
    );
}

#[tokio::test]
async fn openai_model_map_rewrites_only_the_model() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        r#"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}/v1"
        api_key = "k"
        models = ["chat-default", "gpt-4o-mini"]
        model_map = {{ "chat-default" = "gpt-4o-2024-08-06" }}
        {}"#,
        upstream.base_url(),
        keys()
    ))
    .await;
    let body = json!({"model": "chat-default", "messages": [], "seed": 7});
    assert_eq!(
        gateway
            .post("/v1/chat/completions", Some(KEY), &body)
            .await
            .status(),
        200
    );
    let seen = upstream.last();
    assert_eq!(seen.body["model"], "gpt-4o-2024-08-06");
    assert_eq!(seen.body["seed"], 7);

    gateway
        .post(
            "/v1/embeddings",
            Some(KEY),
            &json!({"model": "gpt-4o-mini", "input": "x"}),
        )
        .await;
    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.body["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn azure_classic_and_v1_paths() {
    let upstream = FakeUpstream::start("az").await;
    let gateway = TestGateway::start(&format!(
        r#"
        [[deployments]]
        name = "classic"
        provider = "azure"
        base_url = "{base}/"
        api_key = "azure-secret"
        api_version = "2024-10-21"
        models = ["gpt-4o", "text-embedding-3-small"]
        model_map = {{ "gpt-4o" = "gpt4o-prod" }}

        [[deployments]]
        name = "v1"
        provider = "azure"
        base_url = "{base}"
        api_key = "azure-v1-secret"
        api_version = "v1"
        models = ["gpt-4.1"]
        model_map = {{ "gpt-4.1" = "gpt41-sweden" }}
        {keys}"#,
        base = upstream.base_url(),
        keys = keys()
    ))
    .await;

    assert_eq!(
        gateway
            .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
            .await
            .status(),
        200
    );
    let seen = upstream.last();
    assert_eq!(seen.path, "/openai/deployments/gpt4o-prod/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen.headers["api-key"], "azure-secret");
    assert!(!seen.headers.contains_key("authorization"));
    assert_eq!(
        seen.body["model"], "gpt-4o",
        "classic Azure names the deployment in the path"
    );

    gateway
        .post(
            "/v1/embeddings",
            Some(KEY),
            &json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await;
    assert_eq!(
        upstream.last().path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );

    gateway
        .post(
            "/v1/responses",
            Some(KEY),
            &json!({"model": "gpt-4o", "input": "hi"}),
        )
        .await;
    let seen = upstream.last();
    assert_eq!(seen.path, "/openai/responses");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(
        seen.body["model"], "gpt4o-prod",
        "Responses names the deployment in the body"
    );

    gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4.1"))
        .await;
    let seen = upstream.last();
    assert_eq!(seen.path, "/openai/v1/chat/completions");
    assert_eq!(seen.query, None);
    assert_eq!(seen.headers["api-key"], "azure-v1-secret");
    assert_eq!(seen.body["model"], "gpt41-sweden");
}

#[tokio::test]
async fn upstream_errors_keep_status_and_gain_missing_keys() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[retry]\nmax_attempts = 1\n[[deployments]]\nname = \"oa\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o\"]\n{}",
        upstream.base_url(),
        keys()
    ))
    .await;

    let openai_error = r#"{"error":{"message":"Bad temperature","type":"invalid_request_error","param":"temperature","code":null}}"#;
    upstream.push(Behavior::Reply {
        status: 400,
        headers: vec![],
        body: openai_error.into(),
    });
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.text().await.unwrap(),
        openai_error,
        "complete errors pass unchanged"
    );

    upstream.push(Behavior::Reply {
        status: 502,
        headers: vec![],
        body: "<html>bad gateway</html>".into(),
    });
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 502);
    assert_eq!(error_of(response).await["type"], "server_error");
    upstream.push(Behavior::Reply {
        status: 429,
        headers: vec![("retry-after", "7".into())],
        body: r#"{"error":{"code":"429","message":"Please retry after 7 seconds."}}"#.into(),
    });
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let error = error_of(response).await;
    assert_eq!(error["code"], "429");
}

#[tokio::test]
async fn unreachable_and_hanging_upstreams_become_openai_errors() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = closed.local_addr().unwrap();
    drop(closed);
    let slow = FakeUpstream::start("slow").await;
    slow.set_default(Behavior::DelayHead(std::time::Duration::from_secs(30)));
    let gateway = TestGateway::start(&format!(
        r#"
        [[deployments]]
        name = "dead"
        provider = "openai"
        base_url = "http://{dead_addr}"
        models = ["down"]
        [[deployments]]
        name = "slow"
        provider = "openai"
        base_url = "{}"
        models = ["slow"]
        timeout = "300ms"
        {}"#,
        slow.base_url(),
        keys()
    ))
    .await;

    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("down"))
        .await;
    assert_eq!(response.status(), 502);
    let error = error_of(response).await;
    assert_eq!(error["type"], "server_error");
    assert!(error["message"].as_str().unwrap().contains("`dead`"));

    let started = std::time::Instant::now();
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("slow"))
        .await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(error_of(response).await["code"], "upstream_timeout");
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_sent_upstream() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "[[deployments]]\nname = \"oa\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o\"]\n{}",
        upstream.base_url(),
        keys()
    ))
    .await;
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-request-id", "trace-123")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    assert_eq!(upstream.last().headers["x-request-id"], "trace-123");

    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    let made = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(made.starts_with("req_") && made.len() > 20);
    assert_eq!(upstream.last().headers["x-request-id"], made.as_str());
}
