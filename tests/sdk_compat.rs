//! Compatibility with an OpenAI client nobody here wrote (async-openai),
//! against the gateway's shipped mock provider.
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

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
use common::TestGateway;
use futures_util::StreamExt;

const KEY: &str = "sk-sdk-key-0001";

async fn setup() -> (TestGateway, Client<OpenAIConfig>) {
    let gateway = TestGateway::start(&format!(
        r#"
        [[deployments]]
        name = "mock"
        provider = "mock"
        models = ["gpt-4o-mini", "text-embedding-3-small"]
        mock = {{ latency = "1ms", chunks = 6, chunk_interval = "1ms" }}
        [[keys]]
        name = "sdk"
        key = "{KEY}"
        "#
    ))
    .await;
    let config = OpenAIConfig::new()
        .with_api_base(format!("http://{}/v1", gateway.addr))
        .with_api_key(KEY);
    (gateway, Client::with_config(config))
}

fn request(stream: bool) -> async_openai::types::chat::CreateChatCompletionRequest {
    let message = ChatCompletionRequestUserMessageArgs::default()
        .content("Say hello")
        .build()
        .unwrap();
    let mut builder = CreateChatCompletionRequestArgs::default();
    builder.model("gpt-4o-mini").messages(vec![message.into()]);
    if stream {
        builder.stream(true);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn chat_non_streaming_and_streaming() {
    let (_gateway, client) = setup().await;
    let reply = client.chat().create(request(false)).await.unwrap();
    let text = reply.choices[0].message.content.clone().unwrap();
    assert!(!text.is_empty());
    let usage = reply.usage.unwrap();
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    let mut stream = client.chat().create_stream(request(true)).await.unwrap();
    let mut streamed = String::new();
    let mut finished = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for choice in chunk.choices {
            if let Some(content) = choice.delta.content {
                streamed.push_str(&content);
            }
            finished |= choice.finish_reason.is_some();
        }
    }
    assert!(finished, "the stream carried a finish_reason");
    assert_eq!(
        streamed, text,
        "the mock is deterministic for the same request"
    );
}

#[tokio::test]
async fn embeddings_models_and_errors() {
    let (gateway, client) = setup().await;
    let embedding_request = CreateEmbeddingRequestArgs::default()
        .model("text-embedding-3-small")
        .input(["the gateway routes requests", "quota"])
        .build()
        .unwrap();
    let embeddings = client.embeddings().create(embedding_request).await.unwrap();
    assert_eq!(embeddings.data.len(), 2);
    assert_eq!(embeddings.data[0].embedding.len(), 1536);

    let models = client.models().list().await.unwrap();
    let ids: Vec<String> = models.data.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["gpt-4o-mini", "text-embedding-3-small"]);

    let bad = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("http://{}/v1", gateway.addr))
            .with_api_key("sk-not-a-real-key"),
    );
    match bad.chat().create(request(false)).await {
        Err(async_openai::error::OpenAIError::ApiError(error)) => {
            assert_eq!(error.status_code, 401);
            assert_eq!(error.api_error.code.as_deref(), Some("invalid_api_key"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}
