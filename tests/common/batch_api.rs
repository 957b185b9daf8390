//! The Files and Batch API as the batch tests call it: upload a JSONL file,
//! create a batch on it, or both.

use serde_json::{Value, json};

use super::TestGateway;

/// Uploads `bytes` as a `purpose=batch` file for `key`; the file object.
pub async fn upload(gateway: &TestGateway, key: &str, bytes: &str) -> Value {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.as_bytes().to_vec()).file_name("input.jsonl"),
        );
    let response = gateway
        .client
        .post(gateway.url("/v1/files"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "upload refused: {body}");
    body
}

/// Creates a chat batch on `file_id` for `key`; the batch object.
pub async fn create(gateway: &TestGateway, key: &str, file_id: &str) -> Value {
    let response = gateway
        .post(
            "/v1/batches",
            Some(key),
            &json!({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                    "completion_window": "24h", "metadata": {"job": "nightly"}}),
        )
        .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "batch refused: {body}");
    assert_eq!(body["status"], "validating");
    body
}

/// Uploads `bytes` and starts a batch on them; returns the batch id.
pub async fn start_batch(gateway: &TestGateway, key: &str, bytes: &str) -> String {
    let file = upload(gateway, key, bytes).await;
    let batch = create(gateway, key, file["id"].as_str().unwrap()).await;
    batch["id"].as_str().unwrap().to_owned()
}
