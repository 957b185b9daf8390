//! The built-in mock provider over real sockets, through the gateway: the
//! fields frameworks rely on (tools, structured output, n, logprobs,
//! embeddings input forms), token counts, and the API's refusals.
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

use common::TestGateway;
use common::gateway::error_of;
use serde_json::{Value, json};

async fn gateway() -> TestGateway {
    TestGateway::start(
        r#"
        [auth]
        required = false
        [[deployments]]
        name = "mock"
        provider = "mock"
        models = ["gpt-4o", "text-embedding-3-small"]
        mock = { latency = "1ms", chunks = 4, chunk_interval = "1ms" }
        "#,
    )
    .await
}

async fn ok(gateway: &TestGateway, path: &str, body: Value) -> Value {
    let response = gateway.post(path, None, &body).await;
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.unwrap()
}

/// The JSON of each `data:` event of a stream, `[DONE]` left out.
async fn events(gateway: &TestGateway, path: &str, mut body: Value) -> Vec<Value> {
    body["stream"] = json!(true);
    let response = gateway.post(path, None, &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello world"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
                       "days": {"type": "integer", "minimum": 1, "maximum": 3}},
        "required": ["city", "unit", "days"]
    }}}])
}

#[tokio::test]
async fn tool_calls_whole_and_streamed() {
    let gateway = gateway().await;
    let body = chat(json!({"tools": weather_tool(), "tool_choice": "auto"}));
    let answer = ok(&gateway, "/v1/chat/completions", body.clone()).await;
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string());
    assert!(["c", "f"].contains(&arguments["unit"].as_str().unwrap()));
    assert!((1..=3).contains(&arguments["days"].as_i64().unwrap()));

    let chunks = events(&gateway, "/v1/chat/completions", body).await;
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert!(first["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(first["function"]["arguments"], "");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());
    let last = chunks.iter().rev().find(|c| !c["choices"][0].is_null());
    assert_eq!(last.unwrap()["choices"][0]["finish_reason"], "tool_calls");

    // After the tool's result, `auto` answers in text: agent loops end.
    let mut body = chat(json!({"tools": weather_tool()}));
    body["messages"] = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ]);
    let answer = ok(&gateway, "/v1/chat/completions", body).await;
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(answer["choices"][0]["message"]["content"].is_string());
}

#[tokio::test]
async fn structured_output_is_json_of_the_schema() {
    let gateway = gateway().await;
    let schema = json!({"type": "object", "properties": {"title": {"type": "string"},
        "year": {"type": "integer"}}, "required": ["title", "year"], "additionalProperties": false});
    let format = json!({"type": "json_schema", "json_schema": {"name": "movie", "schema": schema, "strict": true}});
    let answer = ok(
        &gateway,
        "/v1/chat/completions",
        chat(json!({"response_format": format})),
    )
    .await;
    let content: Value =
        serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        content["title"].is_string() && content["year"].is_i64(),
        "{content}"
    );

    let body = json!({"model": "gpt-4o", "input": "Name a movie",
                      "text": {"format": {"type": "json_schema", "name": "movie", "schema": schema}}});
    let response = ok(&gateway, "/v1/responses", body).await;
    let text = response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    let content: Value = serde_json::from_str(text).unwrap();
    assert!(content["year"].is_i64(), "{content}");
}

#[tokio::test]
async fn n_choices_and_logprobs_agree_streamed_or_not() {
    let gateway = gateway().await;
    let body = chat(json!({"n": 3, "logprobs": true, "top_logprobs": 2}));
    let answer = ok(&gateway, "/v1/chat/completions", body.clone()).await;
    let choices = answer["choices"].as_array().unwrap();
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2]);
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        let tokens = choice["logprobs"]["content"].as_array().unwrap();
        let spelled: String = tokens
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(spelled, texts[index]);
        assert!(
            tokens
                .iter()
                .all(|t| t["top_logprobs"].as_array().unwrap().len() == 2)
        );
    }
    let tokens: u64 = choices
        .iter()
        .map(|c| c["logprobs"]["content"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(answer["usage"]["completion_tokens"], tokens);

    let chunks = events(&gateway, "/v1/chat/completions", body).await;
    for (index, text) in texts.iter().enumerate() {
        let mine = chunks.iter().filter(|c| c["choices"][0]["index"] == index);
        let (mut streamed, mut spelled) = (String::new(), String::new());
        for chunk in mine {
            let choice = &chunk["choices"][0];
            streamed.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            for token in choice["logprobs"]["content"]
                .as_array()
                .into_iter()
                .flatten()
            {
                spelled.push_str(token["token"].as_str().unwrap());
            }
        }
        assert_eq!(&streamed, text);
        assert_eq!(&spelled, text);
    }
}

#[tokio::test]
async fn usage_counts_real_tokens_and_ids_are_unique() {
    let gateway = gateway().await;
    let first = ok(&gateway, "/v1/chat/completions", chat(json!({}))).await;
    let second = ok(&gateway, "/v1/chat/completions", chat(json!({}))).await;
    // 3 per message + "user" (1) + "Hello world" (2) + 3 for the reply.
    assert_eq!(first["usage"]["prompt_tokens"], 9);
    assert_eq!(
        first["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
    assert_ne!(first["id"], second["id"]);
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
}

#[tokio::test]
async fn embeddings_of_tokens_equal_embeddings_of_text() {
    let gateway = gateway().await;
    // "hello world" in cl100k_base.
    let tokens = json!([15339, 1917]);
    let by_text = json!({"model": "text-embedding-3-small", "input": "hello world"});
    let by_text = ok(&gateway, "/v1/embeddings", by_text).await;
    let by_tokens = json!({"model": "text-embedding-3-small", "input": [tokens, "bye"]});
    let by_tokens = ok(&gateway, "/v1/embeddings", by_tokens).await;
    assert_eq!(
        by_text["data"][0]["embedding"],
        by_tokens["data"][0]["embedding"]
    );
    assert_eq!(by_tokens["data"][1]["index"], 1);
    assert_eq!(by_text["usage"]["prompt_tokens"], 2);
    let packed = json!({"model": "text-embedding-3-small", "input": "hello world",
                        "encoding_format": "base64", "dimensions": 256});
    let packed = ok(&gateway, "/v1/embeddings", packed).await;
    // 256 f32s are 1024 bytes: 1368 base64 characters.
    assert_eq!(packed["data"][0]["embedding"].as_str().unwrap().len(), 1368);
}

#[tokio::test]
async fn bad_fields_get_the_apis_400_naming_the_field() {
    let gateway = gateway().await;
    let cases = [
        ("/v1/chat/completions", chat(json!({"n": 0})), "n"),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o"}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": {}}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"tools": [{"type": "function", "function": {"parameters": {}}}]})),
            "tools[0].function.name",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"response_format": {"type": "yaml"}})),
            "response_format.type",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": [[]]}),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
    ];
    for (path, body, param) in cases {
        let response = gateway.post(path, None, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error = error_of(response).await;
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn a_model_serves_only_its_endpoints() {
    let gateway = gateway().await;
    let body =
        json!({"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "hi"}]});
    let response = gateway.post("/v1/chat/completions", None, &body).await;
    assert_eq!(response.status(), 404);
    let error = error_of(response).await;
    assert_eq!(error["param"], "model");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("This is not a chat model")
    );

    let body = json!({"model": "gpt-4o", "input": "hi"});
    let response = gateway.post("/v1/embeddings", None, &body).await;
    assert_eq!(response.status(), 403);
    let error = error_of(response).await;
    assert_eq!(
        error["message"],
        "You are not allowed to generate embeddings from this model"
    );
}

#[tokio::test]
async fn responses_call_functions_and_carry_the_required_fields() {
    let gateway = gateway().await;
    let body = json!({"model": "gpt-4o", "input": "Weather in Oslo?", "instructions": "Be brief",
        "tools": [{"type": "function", "name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
    let response = ok(&gateway, "/v1/responses", body.clone()).await;
    for field in [
        "error",
        "incomplete_details",
        "instructions",
        "tools",
        "parallel_tool_calls",
        "metadata",
        "tool_choice",
        "temperature",
        "top_p",
    ] {
        assert!(response.get(field).is_some(), "missing {field}");
    }
    assert_eq!(response["instructions"], "Be brief");
    let item = &response["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "get_weather");
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
    let usage = &response["usage"]["input_tokens_details"];
    assert_eq!(usage["cached_tokens"], 0);

    let streamed = events(&gateway, "/v1/responses", body).await;
    let kinds: Vec<&str> = streamed
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"response.function_call_arguments.delta"));
    let done = streamed
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done["arguments"], item["arguments"]);
}
