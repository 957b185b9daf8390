//! `/v1/uploads`: a file sent in parts and joined, in the order the client
//! names, into Sluice's Files store; the size and MD5 checked; parts past
//! the declared size, another key's upload and a second complete refused.
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

use common::gateway::{deployment, error_of};
use common::process::TempDir;
use common::{FakeUpstream, TestGateway};
use serde_json::{Value, json};

const KEY: &str = "sk-uploads-key-0001";
const OTHER_KEY: &str = "sk-uploads-key-0002";

async fn gateway(dir: &TempDir) -> TestGateway {
    let upstream = FakeUpstream::start("oa").await;
    TestGateway::start(&format!(
        "[batch]\nstore = \"sqlite:{0}/jobs.sqlite\"\nfiles_dir = \"{0}/files\"\nmax_file_bytes = 1000000\n\
         {1}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n[[keys]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\n",
        dir.display(),
        deployment("oa", &upstream, "")
    ))
    .await
}

async fn create(gateway: &TestGateway, bytes: usize) -> reqwest::Response {
    gateway
        .post(
            "/v1/uploads",
            Some(KEY),
            &json!({"filename": "data.jsonl", "purpose": "batch", "bytes": bytes, "mime_type": "text/jsonl"}),
        )
        .await
}

async fn part(gateway: &TestGateway, upload: &str, key: &str, bytes: Vec<u8>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "data",
        reqwest::multipart::Part::bytes(bytes).file_name("part"),
    );
    gateway
        .client
        .post(gateway.url(&format!("/v1/uploads/{upload}/parts")))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn parts_are_joined_in_the_order_named_into_a_file() {
    let dir = TempDir::new("sluice-uploads");
    let gateway = gateway(&dir).await;
    let whole: Vec<u8> = (0..3000u32).flat_map(|n| n.to_le_bytes()).collect();
    let (first, second) = whole.split_at(7000);

    let upload: Value = create(&gateway, whole.len()).await.json().await.unwrap();
    assert_eq!(upload["object"], "upload");
    assert_eq!(upload["status"], "pending");
    let id = upload["id"].as_str().unwrap();
    // Sent out of order: the client names the order at the end.
    let b: Value = part(&gateway, id, KEY, second.to_vec())
        .await
        .json()
        .await
        .unwrap();
    let a: Value = part(&gateway, id, KEY, first.to_vec())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["object"], "upload.part");
    assert_eq!(a["upload_id"], id);
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    // Another key cannot add to it; a part past the size is refused.
    assert_eq!(part(&gateway, id, OTHER_KEY, vec![1]).await.status(), 404);
    assert_eq!(part(&gateway, id, KEY, vec![1]).await.status(), 400);
    // The wrong order fails the MD5, and leaves the upload pending.
    let complete = |order: Vec<&str>| json!({"part_ids": order, "md5": md5_hex(&whole)});
    let wrong = gateway
        .post(
            &format!("/v1/uploads/{id}/complete"),
            Some(KEY),
            &complete(vec![b, a]),
        )
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(error_of(wrong).await["param"], "md5");
    let done: Value = gateway
        .post(
            &format!("/v1/uploads/{id}/complete"),
            Some(KEY),
            &complete(vec![a, b]),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["file"]["bytes"], whole.len());
    assert_eq!(done["file"]["purpose"], "batch");
    let file = done["file"]["id"].as_str().unwrap();
    let content = gateway
        .client
        .get(gateway.url(&format!("/v1/files/{file}/content")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(content.as_ref(), whole.as_slice());
    // Done is done: no second complete, no cancel.
    let again = gateway
        .post(
            &format!("/v1/uploads/{id}/complete"),
            Some(KEY),
            &complete(vec![a, b]),
        )
        .await;
    assert_eq!(again.status(), 409);
    let cancel = gateway
        .post(&format!("/v1/uploads/{id}/cancel"), Some(KEY), &json!({}))
        .await;
    assert_eq!(cancel.status(), 409);
}

#[tokio::test]
async fn sizes_are_checked_and_a_cancelled_upload_takes_nothing() {
    let dir = TempDir::new("sluice-uploads");
    let gateway = gateway(&dir).await;
    // Past `max_file_bytes`, or an unknown purpose: refused at create.
    assert_eq!(create(&gateway, 2_000_000).await.status(), 400);
    let bad_purpose = gateway
        .post(
            "/v1/uploads",
            Some(KEY),
            &json!({"filename": "a", "purpose": "nope", "bytes": 5, "mime_type": "text/plain"}),
        )
        .await;
    assert_eq!(error_of(bad_purpose).await["param"], "purpose");

    let upload: Value = create(&gateway, 10).await.json().await.unwrap();
    let id = upload["id"].as_str().unwrap();
    let short: Value = part(&gateway, id, KEY, vec![7; 4])
        .await
        .json()
        .await
        .unwrap();
    let short_id = short["id"].as_str().unwrap();
    let incomplete = gateway
        .post(
            &format!("/v1/uploads/{id}/complete"),
            Some(KEY),
            &json!({"part_ids": [short_id]}),
        )
        .await;
    assert_eq!(incomplete.status(), 400);
    let unknown_part = gateway
        .post(
            &format!("/v1/uploads/{id}/complete"),
            Some(KEY),
            &json!({"part_ids": ["part_x"]}),
        )
        .await;
    assert_eq!(error_of(unknown_part).await["param"], "part_ids");
    let stranger = gateway
        .post(
            &format!("/v1/uploads/{id}/cancel"),
            Some(OTHER_KEY),
            &json!({}),
        )
        .await;
    assert_eq!(stranger.status(), 404);
    let cancelled: Value = gateway
        .post(&format!("/v1/uploads/{id}/cancel"), Some(KEY), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(part(&gateway, id, KEY, vec![1]).await.status(), 409);
}
