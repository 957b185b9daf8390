//! The Batch API's durability, against the real binary: a `kill -9` in the
//! middle of a batch loses no line and repeats none in the output (the
//! restarted replica resumes from the recorded lines), and in a fleet on
//! PostgreSQL with a shared `files_dir`, a second replica takes over the
//! batch of one that was killed once its lease runs out and finishes it.
#![allow(clippy::disallowed_methods, reason = "tests own their tasks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::FakeUpstream;
use common::fake_upstream::Behavior;
use common::gateway::deployment;
use common::postgres::{self, TestDatabase};
use common::process::{SluiceProcess, TempDir, free_port};
use serde_json::Value;

const KEY: &str = "sk-alpha-000000";
/// Lines in each batch.
const LINES: usize = 300;
/// How long the fake upstream takes per line: with `max_concurrency = 8`
/// a batch runs for several seconds, so a kill lands in its middle.
const UPSTREAM_DELAY: Duration = Duration::from_millis(150);
/// Longest any one wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// The real binary with its data in `data_dir` and `batch` added to its
/// `[batch]` section; `name` names its config and log.
async fn start(data_dir: &Path, upstream: &FakeUpstream, batch: &str, name: &str) -> SluiceProcess {
    std::fs::create_dir_all(data_dir).unwrap();
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"2s\"\n\
         [log]\nformat = \"json\"\n[usage]\ndata_dir = \"{}\"\n\
         [batch]\nlease = \"3s\"\npoll_interval = \"100ms\"\nmax_concurrency = 8\n{batch}\n\
         {}[[keys]]\nname = \"alpha\"\nkey = \"{KEY}\"\n",
        data_dir.display(),
        deployment("oa", upstream, "")
    );
    SluiceProcess::start(data_dir, name, port, &config).await
}

/// `LINES` chat requests, custom ids `line-0` …, each with its own prompt.
fn input() -> Vec<u8> {
    let mut text = String::new();
    for n in 0..LINES {
        let line = serde_json::json!({
            "custom_id": format!("line-{n}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": format!("Say {n}")}]},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text.into_bytes()
}

async fn create_batch(client: &reqwest::Client, url: &str, file_id: &str) -> String {
    let response = client
        .post(format!("{url}/v1/batches"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let batch: Value = response.json().await.unwrap();
    batch["id"].as_str().unwrap().to_owned()
}

async fn retrieve(client: &reqwest::Client, url: &str, batch_id: &str) -> Value {
    let response = client
        .get(format!("{url}/v1/batches/{batch_id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the batch until `until` holds, within `DEADLINE`.
async fn wait_for(
    client: &reqwest::Client,
    sluice: &SluiceProcess,
    batch_id: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let batch = retrieve(client, &sluice.url, batch_id).await;
        if until(&batch) {
            return batch;
        }
        assert!(
            Instant::now() < deadline,
            "the batch did not get there in time: {batch}\n{}",
            sluice.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn completed(batch: &Value) -> i64 {
    batch["request_counts"]["completed"].as_i64().unwrap()
}

/// The custom ids in a file's content, in order (none for a null id).
async fn custom_ids(client: &reqwest::Client, url: &str, file_id: &Value) -> Vec<String> {
    let Some(file_id) = file_id.as_str() else {
        return Vec::new();
    };
    let response = client
        .get(format!("{url}/v1/files/{file_id}/content"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            line["custom_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Every custom id of the input appears exactly once across the output and
/// error files of the completed `batch`, and every line succeeded.
async fn assert_exactly_once(client: &reqwest::Client, url: &str, batch: &Value) {
    assert_eq!(batch["status"], "completed", "{batch}");
    let outputs = custom_ids(client, url, &batch["output_file_id"]).await;
    let errors = custom_ids(client, url, &batch["error_file_id"]).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for id in outputs.iter().chain(&errors) {
        *seen.entry(id.clone()).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "custom ids written twice: {repeated:?}"
    );
    let missing: Vec<_> = (0..LINES)
        .map(|n| format!("line-{n}"))
        .filter(|id| !seen.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "custom ids missing: {missing:?}");
    assert_eq!(outputs.len() + errors.len(), LINES);
    assert!(errors.is_empty(), "lines failed: {errors:?}");
    assert_eq!(batch["request_counts"]["total"], LINES);
    assert_eq!(completed(batch), LINES as i64);
    assert_eq!(batch["request_counts"]["failed"], 0);
}

async fn slow_upstream() -> FakeUpstream {
    let upstream = FakeUpstream::start("slow").await;
    upstream.set_default(Behavior::DelayHead(UPSTREAM_DELAY));
    upstream
}

/// A first replica running a batch on `input()` with at least one line
/// recorded: the replica, the input file's id, the batch's id and the batch
/// as last seen.
async fn a_batch_under_way(
    dir: &Path,
    upstream: &FakeUpstream,
    client: &reqwest::Client,
) -> (SluiceProcess, String, String, Value) {
    let first = start(dir, upstream, "", "first").await;
    let file_id = first.upload_batch_file(KEY, input()).await;
    let batch_id = create_batch(client, &first.url, &file_id).await;
    let seen = wait_for(client, &first, &batch_id, |batch| completed(batch) > 0).await;
    (first, file_id, batch_id, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_killed_mid_run_resumes_with_every_line_once() {
    let dir = TempDir::new("sluice-batch");
    let upstream = slow_upstream().await;
    let client = reqwest::Client::new();

    let (mut first, _, batch_id, before) = a_batch_under_way(&dir, &upstream, &client).await;
    first.kill_9();
    assert_eq!(before["status"], "in_progress", "{before}");
    assert!(completed(&before) < LINES as i64, "{before}");

    let second = start(&dir.0, &upstream, "", "second").await;
    let done = wait_for(&client, &second, &batch_id, |batch| {
        batch["status"] != "in_progress" && batch["status"] != "finalizing"
    })
    .await;
    assert_exactly_once(&client, &second.url, &done).await;
    assert!(
        second.log_text().contains("batch claimed"),
        "{}",
        second.log_text()
    );
    // At least once upstream: the lines in flight at the kill went again.
    assert!(upstream.calls() >= LINES, "{} calls", upstream.calls());
}

/// The input file deleted while its batch runs: the batch still resumes
/// after a `kill -9` (the bytes stay until it closes), then they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_input_was_deleted_still_resumes() {
    let dir = TempDir::new("sluice-batch");
    let upstream = slow_upstream().await;
    let client = reqwest::Client::new();

    let (mut first, file_id, batch_id, _) = a_batch_under_way(&dir, &upstream, &client).await;
    let deleted = client
        .delete(format!("{}/v1/files/{file_id}", first.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = client
        .get(format!("{}/v1/files/{file_id}", first.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    first.kill_9();

    let second = start(&dir.0, &upstream, "", "second").await;
    let done = wait_for(&client, &second, &batch_id, |batch| {
        batch["status"] != "in_progress" && batch["status"] != "finalizing"
    })
    .await;
    assert_exactly_once(&client, &second.url, &done).await;
    let bytes = dir.0.join("files").join(&file_id);
    assert!(
        !bytes.exists(),
        "the deleted input's bytes outlived its batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_takes_over_the_batch_of_one_killed_on_postgres() {
    let database = TestDatabase::create(postgres::PLAIN).await;
    let dir = TempDir::new("sluice-batch");
    let files_dir = dir.0.join("shared-files");
    let batch = format!(
        "store = \"{}\"\nfiles_dir = \"{}\"",
        database.url(),
        files_dir.display()
    );
    let upstream = slow_upstream().await;
    let client = reqwest::Client::new();

    let mut a = start(&dir.0.join("a"), &upstream, &batch, "a").await;
    let file_id = a.upload_batch_file(KEY, input()).await;
    let batch_id = create_batch(&client, &a.url, &file_id).await;
    let before = wait_for(&client, &a, &batch_id, |batch| completed(batch) > 0).await;
    // B joins while A holds the lease and heart-beats: it must leave the
    // batch alone until A is gone and the lease has run out.
    let b = start(&dir.0.join("b"), &upstream, &batch, "b").await;
    let while_both = wait_for(&client, &b, &batch_id, |batch| {
        completed(batch) > completed(&before)
    })
    .await;
    assert_eq!(while_both["status"], "in_progress", "{while_both}");
    assert!(
        !b.log_text().contains("batch claimed"),
        "B took a batch A still held: {}",
        b.log_text()
    );
    a.kill_9();
    let killed_at = Instant::now();

    let done = wait_for(&client, &b, &batch_id, |batch| {
        batch["status"] != "in_progress" && batch["status"] != "finalizing"
    })
    .await;
    assert_exactly_once(&client, &b.url, &done).await;
    assert!(b.log_text().contains("batch claimed"), "{}", b.log_text());
    assert!(
        killed_at.elapsed() < DEADLINE,
        "took over after {:?}",
        killed_at.elapsed()
    );
    drop(b);
    drop(a);
    database.drop_database().await;
}
