//! Every way a request can be refused gets OpenAI's four-key error body and
//! the status that makes the SDKs raise the right exception.
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

const KEY: &str = "sk-client-key-0001";
const LIMITED_KEY: &str = "sk-limited-key-0002";

async fn gateway() -> (FakeUpstream, TestGateway) {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        r#"
        [server]
        max_body_bytes = 1024
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}"
        models = ["gpt-4o", "gpt-4o-mini"]
        [[keys]]
        name = "app"
        key = "{KEY}"
        [[keys]]
        name = "limited"
        key_sha256 = "{}"
        models = ["gpt-4o-mini"]
        "#,
        upstream.base_url(),
        sluice::config::sha256(LIMITED_KEY)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
    .await;
    (upstream, gateway)
}

#[tokio::test]
async fn auth_errors() {
    let (upstream, gateway) = gateway().await;
    let response = gateway
        .post("/v1/chat/completions", None, &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["type"], "invalid_request_error");

    let response = gateway
        .post(
            "/v1/chat/completions",
            Some("sk-wrong-key-9876"),
            &chat("gpt-4o"),
        )
        .await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["code"], "invalid_api_key");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("...9876") && !message.contains("sk-") && !message.contains("wrong"),
        "{message}"
    );

    // Azure-style header works too; key_sha256 keys resolve.
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .header("api-key", LIMITED_KEY)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.calls(),
        1,
        "rejected requests never reach the upstream"
    );
}

#[tokio::test]
async fn model_errors() {
    let (_upstream, gateway) = gateway().await;
    let response = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-9"))
        .await;
    assert_eq!(response.status(), 404);
    let error = error_of(response).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");
    assert!(error["message"].as_str().unwrap().contains("`gpt-9`"));

    let response = gateway
        .post("/v1/chat/completions", Some(LIMITED_KEY), &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_of(response).await["code"], "model_not_allowed");

    let models = gateway.get_json("/v1/models", Some(LIMITED_KEY)).await;
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["gpt-4o-mini"],
        "the list honours the key's allow-list"
    );
    let one = gateway
        .client
        .get(gateway.url("/v1/models/gpt-4o"))
        .bearer_auth(LIMITED_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 404);
}

#[tokio::test]
async fn body_errors() {
    let (upstream, gateway) = gateway().await;
    let post_raw = |body: &'static str, content_type: &'static str| {
        gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = post_raw("{\"model\": \"gpt-4o\",", "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        error_of(response).await["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON")
    );

    let response = post_raw("{\"messages\": []}", "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["param"], "model");

    let response = post_raw("[1, 2]", "application/json").await.unwrap();
    assert_eq!(response.status(), 400);

    let response = post_raw("model=gpt-4o", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(error_of(response).await["code"], "unsupported_media_type");

    let big = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let response = gateway.post("/v1/chat/completions", Some(KEY), &big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(error_of(response).await["code"], "request_too_large");

    // Chunked bodies (no content-length) are bounded too.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64])));
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn route_and_method_errors() {
    let (_upstream, gateway) = gateway().await;
    let response = gateway
        .client
        .get(gateway.url("/v1/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        error_of(response).await["message"],
        "Invalid URL (GET /v1/nope)"
    );

    let response = gateway
        .client
        .get(gateway.url("/v1/embeddings"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(error_of(response).await["code"], "method_not_allowed");

    for probe in ["/healthz", "/readyz"] {
        let response = gateway.client.get(gateway.url(probe)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe} needs no key");
    }
}
