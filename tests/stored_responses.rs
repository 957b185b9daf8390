//! Stored responses live on the provider account that made them: every call
//! naming one (`GET`/`DELETE /v1/responses/{id}`, `input_items`, `cancel`,
//! `previous_response_id`) goes to the deployment that created it, or is
//! answered 404 in OpenAI's shape.
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

use common::gateway::error_of;
use common::redis::RedisServer;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::json;

const KEY: &str = "sk-client-key-0001";
const OTHER_KEY: &str = "sk-client-key-0002";

fn keys() -> String {
    format!(
        "[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n[[keys]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\n"
    )
}

fn openai(name: &str, upstream: &FakeUpstream, extra: &str) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nprovider = \"openai\"\nbase_url = \"{}/v1\"\nmodels = [\"gpt-4o\"]\n{extra}\n",
        upstream.base_url()
    )
}

/// An upstream whose every answer is a response object with id `id`.
async fn holding(id: &str) -> FakeUpstream {
    let upstream = FakeUpstream::start(id).await;
    upstream.set_default(Behavior::Reply {
        status: 200,
        headers: vec![("content-type", "application/json".into())],
        body: json!({"id": id, "object": "response", "status": "completed", "output": [],
                     "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}})
        .to_string(),
    });
    upstream
}

async fn call(
    gateway: &TestGateway,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::Response {
    gateway
        .client
        .request(method, gateway.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn create(gateway: &TestGateway, body: serde_json::Value) -> String {
    let response = gateway.post("/v1/responses", Some(KEY), &body).await;
    assert_eq!(response.status(), 200);
    let reply: serde_json::Value = response.json().await.unwrap();
    reply["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_call_naming_a_response_goes_to_its_deployment() {
    let (a, b) = (holding("resp_a").await, holding("resp_b").await);
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        openai("a", &a, ""),
        openai("b", &b, ""),
        keys()
    ))
    .await;
    let id = create(&gateway, json!({"model": "gpt-4o", "input": "hi"})).await;
    let (home, away) = if id == "resp_a" { (&a, &b) } else { (&b, &a) };
    let away_calls = away.calls();
    for _ in 0..8 {
        let response = call(
            &gateway,
            reqwest::Method::GET,
            &format!("/v1/responses/{id}"),
            KEY,
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(home.last().path, format!("/v1/responses/{id}"));
        assert_eq!(home.last().method, "GET");
        let next = json!({"model": "gpt-4o", "input": "more", "previous_response_id": id});
        assert_eq!(
            gateway
                .post("/v1/responses", Some(KEY), &next)
                .await
                .status(),
            200
        );
        assert_eq!(home.last().body, next, "the body goes on untouched");
    }
    let path = format!("/v1/responses/{id}/input_items?limit=2&api-version=x");
    assert_eq!(
        call(&gateway, reqwest::Method::GET, &path, KEY)
            .await
            .status(),
        200
    );
    assert_eq!(home.last().path, format!("/v1/responses/{id}/input_items"));
    assert_eq!(home.last().query.as_deref(), Some("limit=2"));
    let path = format!("/openai/v1/responses/{id}/cancel");
    assert_eq!(
        call(&gateway, reqwest::Method::POST, &path, KEY)
            .await
            .status(),
        200
    );
    assert_eq!(home.last().path, format!("/v1/responses/{id}/cancel"));
    let path = format!("/v1/responses/{id}");
    assert_eq!(
        call(&gateway, reqwest::Method::DELETE, &path, KEY)
            .await
            .status(),
        200
    );
    assert_eq!(home.last().method, "DELETE");
    assert_eq!(
        away.calls(),
        away_calls,
        "the other account was never asked"
    );
}

#[tokio::test]
async fn unknown_ids_and_other_keys_get_openai_404s() {
    let a = holding("resp_a").await;
    let gateway = TestGateway::start(&format!("{}{}", openai("a", &a, ""), keys())).await;
    let id = create(&gateway, json!({"model": "gpt-4o", "input": "hi"})).await;
    let calls = a.calls();

    let missing = call(
        &gateway,
        reqwest::Method::GET,
        "/v1/responses/resp_nope",
        KEY,
    )
    .await;
    assert_eq!(missing.status(), 404);
    let error = error_of(missing).await;
    assert_eq!(error["message"], "Response with id 'resp_nope' not found.");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], serde_json::Value::Null);

    let path = format!("/v1/responses/{id}");
    let foreign = call(&gateway, reqwest::Method::GET, &path, OTHER_KEY).await;
    assert_eq!(foreign.status(), 404, "another key's response is not found");

    let next = json!({"model": "gpt-4o", "input": "x", "previous_response_id": "resp_gone"});
    let refused = gateway.post("/v1/responses", Some(KEY), &next).await;
    assert_eq!(refused.status(), 404);
    let error = error_of(refused).await;
    assert_eq!(error["param"], "previous_response_id");
    assert_eq!(
        error["message"],
        "Previous response with id 'resp_gone' not found."
    );

    let odd = call(
        &gateway,
        reqwest::Method::GET,
        "/v1/responses/resp%2F..",
        KEY,
    )
    .await;
    assert_eq!(odd.status(), 404);
    assert_eq!(a.calls(), calls, "nothing unknown reached an upstream");
}

#[tokio::test]
async fn a_streamed_response_is_pinned_from_its_created_event() {
    let (a, b) = (holding("resp_a").await, holding("resp_b").await);
    let created = |id: &str| {
        format!(
            "event: response.created\ndata: {}\n\n",
            json!({"type": "response.created", "sequence_number": 0,
                   "response": {"id": id, "object": "response", "status": "in_progress"}})
        )
    };
    let done = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"x\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1,\"total_tokens\":2}}}\n\n";
    for (upstream, id) in [(&a, "resp_sa"), (&b, "resp_sb")] {
        upstream.push(Behavior::Stream {
            events: vec![created(id), done.to_owned()],
            interval: Duration::from_millis(1),
            gate: None,
        });
    }
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        openai("a", &a, ""),
        openai("b", &b, ""),
        keys()
    ))
    .await;
    let body = json!({"model": "gpt-4o", "input": "hi", "stream": true});
    let response = gateway.post("/v1/responses", Some(KEY), &body).await;
    let text = response.text().await.unwrap();
    let id = if text.contains("resp_sa") {
        "resp_sa"
    } else {
        "resp_sb"
    };
    let home = if id == "resp_sa" { &a } else { &b };
    let before = home.calls();
    let path = format!("/v1/responses/{id}");
    for _ in 0..4 {
        assert_eq!(
            call(&gateway, reqwest::Method::GET, &path, KEY)
                .await
                .status(),
            200
        );
    }
    assert_eq!(home.calls(), before + 4);
}

/// A GET once the replica has reached Redis (it connects in the background).
async fn get_when_connected(gateway: &TestGateway, path: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = call(gateway, reqwest::Method::GET, path, KEY).await;
        if response.status() != 503 || tokio::time::Instant::now() > deadline {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replicas_share_pins_through_redis_and_a_removed_deployment_is_404() {
    let redis = RedisServer::start().await;
    let (a, b) = (holding("resp_a").await, holding("resp_b").await);
    let shared = format!(
        "[redis]\nurl = \"{}\"\n[responses]\nttl = \"1d\"\n",
        redis.url()
    );
    let both = format!(
        "{}{}{}{shared}",
        openai("a", &a, ""),
        openai("b", &b, "priority = 1"),
        keys()
    );
    let first = TestGateway::start(&both).await;
    let second = TestGateway::start(&both).await;
    let probe = get_when_connected(&first, "/v1/responses/resp_probe").await;
    assert_eq!(probe.status(), 404, "connected, and the id is unknown");
    let id = create(&first, json!({"model": "gpt-4o", "input": "hi"})).await;
    assert_eq!(id, "resp_a", "the priority 0 deployment made it");
    b.set_default(Behavior::server_error());
    let path = format!("/v1/responses/{id}");
    let response = get_when_connected(&second, &path).await;
    assert_eq!(
        response.status(),
        200,
        "the other replica knows where it lives"
    );
    assert_eq!(response.headers()["x-sluice-deployment"], "a");

    let without_a = format!("{}{}{shared}", openai("b", &b, ""), keys());
    let third = TestGateway::start(&without_a).await;
    let b_calls = b.calls();
    let gone = get_when_connected(&third, &path).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(b.calls(), b_calls, "another account is never asked");
}

#[tokio::test]
async fn mock_deployments_behave_as_separate_accounts() {
    let mock = |name: &str| {
        format!("[[deployments]]\nname = \"{name}\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n")
    };
    let gateway = TestGateway::start(&format!("{}{}{}", mock("m1"), mock("m2"), keys())).await;
    let id = create(&gateway, json!({"model": "gpt-4o", "input": "hi"})).await;
    for turn in 0..8 {
        let next =
            json!({"model": "gpt-4o", "input": format!("turn {turn}"), "previous_response_id": id});
        let response = gateway.post("/v1/responses", Some(KEY), &next).await;
        assert_eq!(response.status(), 200, "turn {turn}");
    }
    let stored = gateway
        .get_json(&format!("/v1/responses/{id}"), Some(KEY))
        .await;
    assert_eq!(stored["id"], id.as_str());
    let items = gateway
        .get_json(&format!("/v1/responses/{id}/input_items"), Some(KEY))
        .await;
    assert_eq!(items["data"][0]["content"][0]["text"], "hi");
    let path = format!("/v1/responses/{id}");
    let deleted: serde_json::Value = call(&gateway, reqwest::Method::DELETE, &path, KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted"], true);
    assert_eq!(
        call(&gateway, reqwest::Method::GET, &path, KEY)
            .await
            .status(),
        404
    );
}
