//! Moderations, images and audio: proxied like the other endpoints (keys,
//! allow-lists, routing, ledger); uploads pass through untouched, speech
//! streams through unbuffered.
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
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;
use serde_json::json;

const KEY: &str = "sk-client-key-0001";

fn config(upstream: &FakeUpstream) -> String {
    format!(
        r#"
        [[deployments]]
        name = "oa"
        provider = "openai"
        base_url = "{}/v1"
        models = ["omni-moderation-latest", "gpt-image-1", "tts-1", "whisper-1"]
        model_map = {{ "whisper-1" = "whisper-upstream" }}
        [[keys]]
        name = "app"
        key = "{KEY}"
        models = ["omni-moderation-latest", "gpt-image-1", "tts-1", "whisper-1"]
        "#,
        upstream.base_url()
    )
}

const BOUNDARY: &str = "sluice-test-boundary";

fn upload(model: &str, audio: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(audio);
    body.extend_from_slice(
        format!("\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--{BOUNDARY}--\r\n").as_bytes(),
    );
    body
}

async fn post_upload(gateway: &TestGateway, path: &str, body: Vec<u8>) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url(path))
        .bearer_auth(KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn moderations_and_images_are_proxied_as_json() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream)).await;
    for (path, body) in [
        (
            "/v1/moderations",
            json!({"model": "omni-moderation-latest", "input": "hello"}),
        ),
        (
            "/v1/images/generations",
            json!({"model": "gpt-image-1", "prompt": "a cat"}),
        ),
    ] {
        let response = gateway.post(path, Some(KEY), &body).await;
        assert_eq!(response.status(), 200, "{path}");
        let seen = upstream.last();
        assert_eq!(seen.path, path);
        assert_eq!(seen.body, body);
    }
    let refused = gateway
        .post(
            "/v1/moderations",
            Some(KEY),
            &json!({"model": "gpt-4o", "input": "x"}),
        )
        .await;
    assert_eq!(refused.status(), 403, "the allow-list applies");
}

#[tokio::test]
async fn uploads_pass_through_untouched_but_for_a_renamed_model() {
    let upstream = FakeUpstream::start("oa").await;
    let gateway = TestGateway::start(&config(&upstream)).await;
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let response = post_upload(
        &gateway,
        "/v1/audio/transcriptions",
        upload("whisper-1", &audio),
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/audio/transcriptions");
    assert_eq!(
        seen.headers["content-type"],
        format!("multipart/form-data; boundary={BOUNDARY}")
    );
    assert_eq!(
        seen.raw,
        upload("whisper-upstream", &audio),
        "only the model field changed"
    );

    // Azure's deployment path names the model; the form is passed as sent.
    let path = "/openai/deployments/whisper-1/audio/translations?api-version=2024-10-21";
    let response = post_upload(&gateway, path, upload("whisper-1", b"RIFF")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.last().path, "/v1/audio/translations");

    let json_to_upload = gateway
        .post(
            "/v1/audio/transcriptions",
            Some(KEY),
            &json!({"model": "whisper-1"}),
        )
        .await;
    assert_eq!(json_to_upload.status(), 415);
    assert_eq!(
        error_of(json_to_upload).await["code"],
        "unsupported_media_type"
    );
    let no_model = post_upload(&gateway, "/v1/audio/transcriptions", upload("", b"x")).await;
    assert_eq!(no_model.status(), 400);
    assert_eq!(error_of(no_model).await["param"], "model");
}

#[tokio::test]
async fn speech_streams_through_before_the_upstream_finishes() {
    let upstream = FakeUpstream::start("oa").await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    upstream.push(Behavior::Stream {
        events: vec!["ID3-first-bytes".into(), "-rest".into()],
        interval: Duration::from_millis(1),
        gate: Some(gate.clone()),
    });
    let gateway = TestGateway::start(&config(&upstream)).await;
    let body = json!({"model": "tts-1", "input": "hello", "voice": "alloy"});
    let response = gateway.post("/v1/audio/speech", Some(KEY), &body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first bytes arrive while the upstream is still sending")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"ID3-first-bytes");
    gate.notify_one();
    let rest = stream.next().await.unwrap().unwrap();
    assert_eq!(&rest[..], b"-rest");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn the_mock_answers_every_media_endpoint() {
    let gateway = TestGateway::start(&format!(
        "[[deployments]]\nname = \"mock\"\nprovider = \"mock\"\nmodels = [\"omni-moderation-latest\", \"gpt-image-1\", \"tts-1\", \"whisper-1\"]\n[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n"
    ))
    .await;
    let moderation: serde_json::Value = gateway
        .post(
            "/v1/moderations",
            Some(KEY),
            &json!({"model": "omni-moderation-latest", "input": ["a", "b"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(moderation["results"].as_array().unwrap().len(), 2);
    let image: serde_json::Value = gateway
        .post(
            "/v1/images/generations",
            Some(KEY),
            &json!({"model": "gpt-image-1", "prompt": "a cat"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        image["data"][0]["b64_json"]
            .as_str()
            .unwrap()
            .starts_with("iVBOR")
    );
    assert!(image["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let speech = gateway
        .post(
            "/v1/audio/speech",
            Some(KEY),
            &json!({"model": "tts-1", "input": "hello there", "voice": "alloy"}),
        )
        .await;
    assert_eq!(speech.headers()["content-type"], "audio/mpeg");
    assert!(speech.bytes().await.unwrap().len() > 100);
    let transcript: serde_json::Value = post_upload(
        &gateway,
        "/v1/audio/transcriptions",
        upload("whisper-1", b"RIFF...."),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        transcript["text"]
            .as_str()
            .unwrap()
            .starts_with("Mock transcript")
    );
}
