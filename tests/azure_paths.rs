//! Azure OpenAI clients: the data-plane paths (`/openai/deployments/{name}/...`,
//! `/openai/responses`, `/openai/v1/...`) are served like `/v1/...`, with
//! the path's deployment name taken as the model.
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
use common::{FakeUpstream, TestGateway};
use serde_json::json;

const KEY: &str = "sk-client-key-0001";

fn config(upstream: &FakeUpstream, extra: &str) -> String {
    format!(
        r#"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}/v1"
        models = ["gpt-4o", "text-embedding-3-small"]
        model_map = {{ "text-embedding-3-small" = "te3s-upstream" }}
        [[keys]]
        name = "app"
        key = "{KEY}"
        {extra}
        "#,
        upstream.base_url()
    )
}

async fn post_azure(
    gateway: &TestGateway,
    path: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url(path))
        .header("api-key", KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_deployment_path_names_the_model_the_upstream_receives() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    // Azure clients may leave `model` out, or name something else.
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    let response = post_azure(&gateway, path, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-deployment"], "oa");
    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.query, None,
        "the client's api-version is the gateway's"
    );
    assert_eq!(seen.body["model"], "gpt-4o");
    assert_eq!(seen.body["messages"], body["messages"]);

    let mut other = chat("something-else");
    other["temperature"] = json!(0.5);
    let response = post_azure(&gateway, path, &other).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().body["model"], "gpt-4o");

    // The upstream's own name for the model still applies (model_map).
    let path = "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21";
    let response = post_azure(&gateway, path, &json!({"input": "hello"})).await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(
        seen.body,
        json!({"model": "te3s-upstream", "input": "hello"})
    );
}

#[tokio::test]
async fn v1_and_responses_paths_and_models_are_served() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let response = post_azure(&gateway, "/openai/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().path, "/v1/chat/completions");

    let body = json!({"model": "gpt-4o", "input": "hi"});
    for path in [
        "/openai/responses?api-version=2025-04-01-preview",
        "/openai/v1/responses",
    ] {
        let response = post_azure(&gateway, path, &body).await;
        assert_eq!(response.status(), 200, "{path}");
        let seen = upstream.last();
        assert_eq!(seen.path, "/v1/responses");
        assert_eq!(seen.body, body);
    }

    let models = gateway
        .client
        .get(gateway.url("/openai/v1/models"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let models: serde_json::Value = models.json().await.unwrap();
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o")
    );
}

#[tokio::test]
async fn azure_paths_keep_openai_errors_auth_and_allow_lists() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway =
        TestGateway::start(&config(&upstream, "models = [\"text-embedding-3-small\"]")).await;
    let path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    let unauthenticated = gateway
        .client
        .post(gateway.url(path))
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let refused = post_azure(&gateway, path, &json!({"messages": []})).await;
    assert_eq!(refused.status(), 403);
    let error = error_of(refused).await;
    assert_eq!(error["code"], "model_not_allowed");

    let unknown = post_azure(
        &gateway,
        "/openai/deployments/text-embedding-3-small/files?api-version=1",
        &json!({}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_of(unknown).await["code"], "unknown_url");

    let missing = post_azure(
        &gateway,
        "/openai/deployments/no-such-model/embeddings?api-version=1",
        &json!({"input": "x"}),
    )
    .await;
    assert_eq!(missing.status(), 403, "the allow-list speaks first");
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn metrics_label_azure_routes_by_template() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream, "")).await;
    let path = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";
    assert_eq!(
        post_azure(&gateway, path, &chat("gpt-4o")).await.status(),
        200
    );
    let metrics = gateway.metrics().await;
    assert!(
        metrics.contains("route=\"/openai/deployments/{deployment}/chat/completions\""),
        "{metrics}"
    );
    assert!(!metrics.contains("route=\"/openai/deployments/gpt-4o"));
}
