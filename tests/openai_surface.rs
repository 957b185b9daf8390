//! The rest of the OpenAI surface through the gateway, against recording
//! fake upstreams: the Responses API's fixed sub-paths (`input_tokens`,
//! `compact`, routed before `{id}`), stored objects of every kind pinned
//! to the deployment that made them (conversations, stored chat
//! completions, vector stores), lists showing only the caller's objects,
//! and image edits as multipart uploads.
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

use common::gateway::error_of;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const KEY: &str = "sk-surface-key-0001";
const OTHER_KEY: &str = "sk-surface-key-0002";

fn keys() -> String {
    format!(
        "[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n[[keys]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\n"
    )
}

fn openai(name: &str, upstream: &FakeUpstream, models: &str, priority: i32) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nprovider = \"openai\"\nbase_url = \"{}/v1\"\nmodels = [{models}]\npriority = {priority}\n",
        upstream.base_url()
    )
}

fn reply(status: u16, body: Value) -> Behavior {
    Behavior::Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.to_string(),
    }
}

async fn send(
    gateway: &TestGateway,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = gateway
        .client
        .request(method, gateway.url(path))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn input_tokens_is_forwarded_and_counted_by_sluice_where_the_deployment_cannot() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{}{}",
        openai("oa", &upstream, "\"gpt-4o\"", 0),
        keys()
    ))
    .await;
    let body = json!({"model": "gpt-4o", "input": "Tell me a joke.", "instructions": "Be brief."});

    upstream.push(reply(
        200,
        json!({"object": "response.input_tokens", "input_tokens": 11}),
    ));
    let forwarded = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/responses/input_tokens",
        KEY,
        Some(body.clone()),
    )
    .await;
    assert_eq!(forwarded.status(), 200);
    assert!(forwarded.headers().get("x-sluice-counted").is_none());
    assert_eq!(forwarded.json::<Value>().await.unwrap()["input_tokens"], 11);
    let seen = upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/responses/input_tokens")
    );
    assert_eq!(seen.body, body);

    // A deployment without the endpoint: Sluice counts.
    upstream.push(reply(
        404,
        json!({"error": {"message": "Not found", "type": "invalid_request_error"}}),
    ));
    let counted = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/responses/input_tokens",
        KEY,
        Some(body),
    )
    .await;
    assert_eq!(counted.status(), 200);
    assert_eq!(counted.headers()["x-sluice-counted"], "sluice");
    let count: Value = counted.json().await.unwrap();
    assert_eq!(count["object"], "response.input_tokens");
    // "Tell me a joke." is 5 tokens and "Be brief." 3 in o200k_base.
    assert_eq!(count["input_tokens"], 8, "{count}");

    // `compact` is a fixed sub-path too, never a response id.
    upstream.push(reply(
        200,
        json!({"id": "resp_c", "object": "response.compaction", "output": [],
        "created_at": 1, "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}),
    ));
    let compacted = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/responses/compact",
        KEY,
        Some(json!({"model": "gpt-4o", "input": "hi"})),
    )
    .await;
    assert_eq!(compacted.status(), 200);
    assert_eq!(upstream.last().path, "/v1/responses/compact");
}

#[tokio::test]
async fn a_conversation_lives_where_it_was_made_and_responses_naming_it_go_there() {
    let (near, far) = (
        FakeUpstream::start("near").await,
        FakeUpstream::start("far").await,
    );
    // gpt-4o on both, `near` first; the home model only on `far`.
    let gateway = TestGateway::start(&format!(
        "[responses]\nhome_model = \"home\"\n{}{}{}",
        openai("near", &near, "\"gpt-4o\"", 0),
        openai("far", &far, "\"gpt-4o\", \"home\"", 1),
        keys()
    ))
    .await;

    far.push(reply(
        200,
        json!({"id": "conv_1", "object": "conversation", "created_at": 1, "metadata": {}}),
    ));
    let created = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/conversations",
        KEY,
        Some(json!({"metadata": {"topic": "x"}})),
    )
    .await;
    assert_eq!(created.status(), 200);
    assert_eq!(far.last().path, "/v1/conversations");
    assert_eq!(far.last().body, json!({"metadata": {"topic": "x"}}));

    // Every call on it goes to `far`, with its method, body and query.
    far.set_default(reply(
        200,
        json!({"object": "list", "data": [], "has_more": false}),
    ));
    for (method, path, body) in [
        (reqwest::Method::GET, "/v1/conversations/conv_1", None),
        (
            reqwest::Method::POST,
            "/v1/conversations/conv_1",
            Some(json!({"metadata": {"a": "b"}})),
        ),
        (
            reqwest::Method::GET,
            "/openai/v1/conversations/conv_1/items?limit=5&order=asc",
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/conversations/conv_1/items",
            Some(json!({"items": []})),
        ),
        (
            reqwest::Method::DELETE,
            "/v1/conversations/conv_1/items/msg_9",
            None,
        ),
    ] {
        let answer = send(&gateway, method.clone(), path, KEY, body.clone()).await;
        assert_eq!(answer.status(), 200, "{method} {path}");
        let seen = far.last();
        assert_eq!(seen.method, method.as_str());
        let below_root = path
            .trim_start_matches("/openai")
            .split('?')
            .next()
            .unwrap();
        assert_eq!(seen.path, below_root);
        assert_eq!(seen.query.as_deref(), path.split_once('?').map(|(_, q)| q));
        if let Some(body) = body {
            assert_eq!(seen.body, body);
        }
    }
    assert_eq!(near.calls(), 0);

    // A response in the conversation goes to `far`, though `near` comes first.
    far.push(reply(
        200,
        json!({"id": "resp_1", "object": "response", "output": [],
        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}),
    ));
    let answered = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/responses",
        KEY,
        Some(json!({"model": "gpt-4o", "input": "hi", "conversation": {"id": "conv_1"}})),
    )
    .await;
    assert_eq!(answered.status(), 200);
    assert_eq!(far.last().path, "/v1/responses");
    assert_eq!(near.calls(), 0);

    // Another key, an unknown id, and both ways of continuing at once.
    let stranger = send(
        &gateway,
        reqwest::Method::GET,
        "/v1/conversations/conv_1",
        OTHER_KEY,
        None,
    )
    .await;
    assert_eq!(stranger.status(), 404);
    assert_eq!(
        error_of(stranger).await["message"],
        "Conversation with id 'conv_1' not found."
    );
    let unknown = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/responses",
        KEY,
        Some(json!({"model": "gpt-4o", "input": "hi", "conversation": "conv_nope"})),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_of(unknown).await["param"], "conversation");
    let both = send(&gateway, reqwest::Method::POST, "/v1/responses", KEY,
        Some(json!({"model": "gpt-4o", "input": "hi", "conversation": "conv_1", "previous_response_id": "resp_1"}))).await;
    assert_eq!(both.status(), 400);
}

#[tokio::test]
async fn stored_chat_completions_are_pinned_and_listed_for_their_key_only() {
    let (near, far) = (
        FakeUpstream::start("near").await,
        FakeUpstream::start("far").await,
    );
    let gateway = TestGateway::start(&format!(
        "{}{}{}",
        openai("near", &near, "\"gpt-4o\"", 0),
        openai("far", &far, "\"gpt-4o\"", 1),
        keys()
    ))
    .await;
    let completion = |id: &str| {
        reply(
            200,
            json!({"id": id, "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
        )
    };
    let chat = |store: bool| json!({"model": "gpt-4o", "store": store, "messages": [{"role": "user", "content": "hi"}]});
    // The first call is made on `near`; the second finds `near` failing
    // and is made on `far`.
    near.push(completion("chatcmpl-near"));
    near.push(Behavior::server_error());
    far.push(completion("chatcmpl-far"));
    let mut holders = Vec::new();
    for key in [KEY, OTHER_KEY] {
        let made: Value = send(
            &gateway,
            reqwest::Method::POST,
            "/v1/chat/completions",
            key,
            Some(chat(true)),
        )
        .await
        .json()
        .await
        .unwrap();
        holders.push((key, made["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(holders[0].1, "chatcmpl-near");
    assert_eq!(holders[1].1, "chatcmpl-far");
    let (mine, theirs) = (&holders[0].1, &holders[1].1);
    let holder = |id: &str| if id == "chatcmpl-near" { &near } else { &far };
    let before = holder(mine).calls();
    let got = send(
        &gateway,
        reqwest::Method::GET,
        &format!("/v1/chat/completions/{mine}/messages"),
        KEY,
        None,
    )
    .await;
    assert_eq!(got.status(), 200);
    assert_eq!(holder(mine).calls(), before + 1);
    assert_eq!(
        holder(mine).last().path,
        format!("/v1/chat/completions/{mine}/messages")
    );
    let stranger = send(
        &gateway,
        reqwest::Method::GET,
        &format!("/v1/chat/completions/{theirs}"),
        KEY,
        None,
    )
    .await;
    assert_eq!(stranger.status(), 404);

    // The list, wherever it is answered, shows only the caller's.
    let listing = json!({"object": "list", "data": [{"id": mine}, {"id": theirs}, {"id": "chatcmpl-unknown"}],
        "first_id": mine, "last_id": "chatcmpl-unknown", "has_more": false});
    near.set_default(reply(200, listing.clone()));
    far.set_default(reply(200, listing));
    let listed: Value = send(
        &gateway,
        reqwest::Method::GET,
        "/v1/chat/completions?limit=10",
        KEY,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed["data"], json!([{"id": mine}]), "{listed}");
    assert_eq!(listed["last_id"], json!(mine));

    // Without `store`, nothing is pinned.
    near.set_default(completion("chatcmpl-unstored"));
    far.set_default(completion("chatcmpl-unstored"));
    send(
        &gateway,
        reqwest::Method::POST,
        "/v1/chat/completions",
        KEY,
        Some(chat(false)),
    )
    .await;
    let unstored = send(
        &gateway,
        reqwest::Method::GET,
        "/v1/chat/completions/chatcmpl-unstored",
        KEY,
        None,
    )
    .await;
    assert_eq!(unstored.status(), 404);
}

#[tokio::test]
async fn a_vector_store_is_made_at_home_and_shown_to_its_key_only() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{}{}",
        openai("oa", &upstream, "\"gpt-4o\"", 0),
        keys()
    ))
    .await;
    upstream.push(reply(
        200,
        json!({"id": "vs_mine", "object": "vector_store"}),
    ));
    let made = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/vector_stores",
        KEY,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(made.status(), 200);
    upstream.push(reply(
        200,
        json!({"id": "vs_theirs", "object": "vector_store"}),
    ));
    send(
        &gateway,
        reqwest::Method::POST,
        "/v1/vector_stores",
        OTHER_KEY,
        Some(json!({"name": "b"})),
    )
    .await;

    upstream.set_default(reply(200, json!({"object": "list",
        "data": [{"id": "vs_theirs"}, {"id": "vs_mine"}], "first_id": "vs_theirs", "last_id": "vs_mine", "has_more": false})));
    let listed: Value = send(
        &gateway,
        reqwest::Method::GET,
        "/v1/vector_stores?order=desc",
        KEY,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed["data"], json!([{"id": "vs_mine"}]));
    assert_eq!(listed["first_id"], "vs_mine");
    assert_eq!(upstream.last().query.as_deref(), Some("order=desc"));

    upstream.set_default(reply(
        200,
        json!({"id": "vs_mine", "object": "vector_store.deleted", "deleted": true}),
    ));
    let search = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/vector_stores/vs_mine/search",
        KEY,
        Some(json!({"query": "q"})),
    )
    .await;
    assert_eq!(search.status(), 200);
    assert_eq!(upstream.last().path, "/v1/vector_stores/vs_mine/search");
    let theirs = send(
        &gateway,
        reqwest::Method::DELETE,
        "/v1/vector_stores/vs_theirs",
        KEY,
        None,
    )
    .await;
    assert_eq!(theirs.status(), 404);
    assert_eq!(
        error_of(theirs).await["message"],
        "Vector store with id 'vs_theirs' not found."
    );
    // A fine-tuning job names its base model: made on the home deployment
    // when the gateway does not serve that name.
    upstream.push(reply(
        200,
        json!({"id": "ftjob-1", "object": "fine_tuning.job"}),
    ));
    let job = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/fine_tuning/jobs",
        KEY,
        Some(json!({"model": "gpt-4o-mini-2024-07-18", "training_file": "file-1"})),
    )
    .await;
    assert_eq!(job.status(), 200);
    let cancel = send(
        &gateway,
        reqwest::Method::POST,
        "/v1/fine_tuning/jobs/ftjob-1/cancel",
        KEY,
        None,
    )
    .await;
    assert_eq!(cancel.status(), 200);
    assert_eq!(upstream.last().path, "/v1/fine_tuning/jobs/ftjob-1/cancel");
}

#[tokio::test]
async fn image_edits_go_up_as_multipart_with_their_model() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&format!(
        "{}{}",
        openai("oa", &upstream, "\"gpt-image-1\"", 0),
        keys()
    ))
    .await;
    upstream.set_default(reply(
        200,
        json!({"created": 1, "data": [{"b64_json": "AAAA"}],
        "usage": {"input_tokens": 5, "output_tokens": 10, "total_tokens": 15}}),
    ));
    for path in ["/v1/images/edits", "/v1/images/variations"] {
        let form = reqwest::multipart::Form::new()
            .text("model", "gpt-image-1")
            .text("prompt", "make it blue")
            .part(
                "image",
                reqwest::multipart::Part::bytes(b"\x89PNG fake".to_vec()).file_name("a.png"),
            );
        let answer = gateway
            .client
            .post(gateway.url(path))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let seen = upstream.last();
        assert_eq!(seen.path, path);
        assert!(
            seen.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("multipart/form-data")
        );
        assert!(String::from_utf8_lossy(&seen.raw).contains("PNG fake"));
    }
    // Without a model the upload is refused before any upstream call.
    let calls = upstream.calls();
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("a.png"),
    );
    let refused = gateway
        .client
        .post(gateway.url("/v1/images/edits"))
        .bearer_auth(KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(upstream.calls(), calls);
}
