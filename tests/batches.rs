//! The Batch API end to end over real sockets: files uploaded as multipart,
//! batches run by the gateway against a fake upstream, output and error
//! files read back; validation, ownership, cancel, retries, expiry, resume
//! after a restart, takeover between replicas on PostgreSQL, budget pauses,
//! priority against realtime calls and the batch discount.
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

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::batch_api::{create, start_batch, upload};
use common::gateway::{chat, deployment};
use common::postgres::{PLAIN, TestDatabase};
use common::process::TempDir;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const OWNER: &str = "sk-batch-owner-0001";
const SIBLING: &str = "sk-batch-sibling-0002";
const STRANGER: &str = "sk-batch-stranger-0003";

/// Owner and sibling share org `acme`; the stranger is in `other`.
const KEYS: &str = "[[keys]]\nname = \"owner\"\nkey = \"sk-batch-owner-0001\"\norg = \"acme\"\n\
[[keys]]\nname = \"sibling\"\nkey = \"sk-batch-sibling-0002\"\norg = \"acme\"\n\
[[keys]]\nname = \"stranger\"\nkey = \"sk-batch-stranger-0003\"\norg = \"other\"\n";

/// A fresh directory for one test's job store and files, removed at the
/// end of the test.
fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("sluice-batches-{tag}"))
}

/// `[batch]` on SQLite in `dir`, polling fast, with the shortest lease;
/// `extra` adds lines to the section.
fn batch_section(dir: &Path, extra: &str) -> String {
    format!(
        "[batch]\nstore = \"sqlite:{0}/jobs.sqlite\"\nfiles_dir = \"{0}/files\"\n\
         poll_interval = \"50ms\"\nlease = \"3s\"\n{extra}\n",
        dir.display()
    )
}

/// A gateway with the three keys, `upstream` serving `gpt-4o`, and the
/// batch store in `dir`; `extra` is more TOML (other sections).
fn config(dir: &Path, upstream: &FakeUpstream, batch_extra: &str, extra: &str) -> String {
    format!(
        "{extra}\n{}{}{KEYS}",
        batch_section(dir, batch_extra),
        deployment("oa", upstream, "")
    )
}

/// One input line for `/v1/chat/completions`.
fn line(custom_id: &str, model: &str, content: &str) -> String {
    json!({
        "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    })
    .to_string()
}

/// `count` lines `r0`.. asking `question <i>` of `gpt-4o`.
fn input(count: usize) -> String {
    (0..count)
        .map(|i| line(&format!("r{i}"), "gpt-4o", &format!("question {i}")) + "\n")
        .collect()
}

fn ids(count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("r{i}")).collect()
}

async fn batch(gateway: &TestGateway, key: &str, id: &str) -> Value {
    let response = gateway.get_as(key, &format!("/v1/batches/{id}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the batch (50 ms apart, up to `within`) until `done` holds.
async fn wait_until(
    gateway: &TestGateway,
    id: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let shown = batch(gateway, OWNER, id).await;
        if done(&shown) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "batch never reached {what} within {within:?}: {shown:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_status(gateway: &TestGateway, id: &str, status: &str) -> Value {
    wait_until(gateway, id, Duration::from_secs(20), status, |batch| {
        batch["status"] == status
    })
    .await
}

/// Waits until at least `count` lines are recorded.
async fn wait_recorded(gateway: &TestGateway, id: &str, count: i64) -> Value {
    wait_until(
        gateway,
        id,
        Duration::from_secs(20),
        &format!("{count} recorded lines"),
        |batch| {
            let counts = &batch["request_counts"];
            counts["completed"].as_i64().unwrap_or(0) + counts["failed"].as_i64().unwrap_or(0)
                >= count
        },
    )
    .await
}

/// The lines of a file's content, parsed.
async fn content(gateway: &TestGateway, key: &str, file_id: &Value) -> Vec<Value> {
    let Some(file_id) = file_id.as_str() else {
        return Vec::new();
    };
    let response = gateway
        .get_as(key, &format!("/v1/files/{file_id}/content"))
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Each line's `custom_id`, failing on one seen twice.
fn custom_ids<'a>(lines: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in lines {
        let id = line["custom_id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "custom_id {id} written twice");
    }
    seen
}

fn count(batch: &Value, which: &str) -> i64 {
    batch["request_counts"][which].as_i64().unwrap()
}

/// An open connection to the SQLite job store, for what the API does not
/// show (pauses) or cannot do (move `expires_at`).
fn store(dir: &Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(dir.join("jobs.sqlite")).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    connection
}

#[tokio::test]
async fn a_batch_runs_every_line_once_and_writes_the_upstreams_answers() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = temp_dir("flow");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", "")).await;
    let file = upload(&gateway, OWNER, &input(20)).await;
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert!(file["id"].as_str().unwrap().starts_with("file-"));
    let created = create(&gateway, OWNER, file["id"].as_str().unwrap()).await;
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("batch_"));

    let done = wait_status(&gateway, id, "completed").await;
    assert_eq!(done["object"], "batch");
    assert_eq!(done["endpoint"], "/v1/chat/completions");
    assert_eq!(done["input_file_id"], file["id"]);
    assert_eq!(done["completion_window"], "24h");
    assert_eq!(done["model"], "gpt-4o");
    assert_eq!(done["metadata"], json!({"job": "nightly"}));
    assert_eq!(done["errors"], Value::Null);
    assert_eq!(
        done["request_counts"],
        json!({"total": 20, "completed": 20, "failed": 0})
    );
    // Every echo reports 5 prompt (3 cached) and 2 completion tokens.
    assert_eq!(done["usage"]["input_tokens"], 100);
    assert_eq!(done["usage"]["output_tokens"], 40);
    assert_eq!(done["usage"]["total_tokens"], 140);
    assert_eq!(done["usage"]["input_tokens_details"]["cached_tokens"], 60);
    let stamp = |name: &str| {
        done[name]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} unset: {done}"))
    };
    let created_at = stamp("created_at");
    assert!(created_at <= stamp("in_progress_at"));
    assert!(stamp("in_progress_at") <= stamp("finalizing_at"));
    assert!(stamp("finalizing_at") <= stamp("completed_at"));
    assert_eq!(stamp("expires_at"), created_at + 24 * 3600);
    for unset in [
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "error_file_id",
    ] {
        assert_eq!(done[unset], Value::Null, "{unset} set: {done}");
    }

    let output_id = done["output_file_id"].as_str().unwrap();
    let output_file: Value = gateway
        .get_as(OWNER, &format!("/v1/files/{output_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(output_file["purpose"], "batch_output");
    let lines = content(&gateway, OWNER, &done["output_file_id"]).await;
    assert_eq!(custom_ids(&lines), ids(20));
    for line in &lines {
        assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["response"]["status_code"], 200);
        assert!(line["response"]["request_id"].is_string());
        let body = &line["response"]["body"];
        assert_eq!(body["id"], "chatcmpl-fake");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "from oa");
        assert_eq!(body["usage"]["prompt_tokens"], 5);
    }

    let seen = upstream.recorded();
    assert_eq!(seen.len(), 20, "one upstream call per line");
    let mut questions = BTreeSet::new();
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/chat/completions");
        assert_eq!(request.body["model"], "gpt-4o");
        let messages = request.body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["role"], "user");
        questions.insert(messages[0]["content"].as_str().unwrap().to_owned());
    }
    let asked: BTreeSet<String> = (0..20).map(|i| format!("question {i}")).collect();
    assert_eq!(questions, asked);

    // A closed batch keeps its counts on its row: it is shown the same
    // without its line results (a list page sums nothing).
    store(&dir)
        .execute("DELETE FROM sluice_batch_results WHERE batch_id = ?1", [id])
        .unwrap();
    let again = batch(&gateway, OWNER, id).await;
    assert_eq!(again["request_counts"], done["request_counts"]);
    assert_eq!(again["usage"], done["usage"]);
}

#[tokio::test]
async fn invalid_input_fails_the_batch_with_the_physical_line_of_each_error() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = temp_dir("invalid");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", "")).await;
    let bad = [
        line("r1", "gpt-4o", "fine"),
        "{\"custom_id\": \"r2\", not json".to_owned(),
        // A blank line is skipped, but still counts as a line of the file.
        "   ".to_owned(),
        line("r1", "gpt-4o", "the same custom_id again"),
        line("r5", "gpt-4o", "wrong url").replace("/v1/chat/completions", "/v1/embeddings"),
        line("r6", "gpt-nope", "unknown model"),
        json!({"custom_id": "r7", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "gpt-4o", "stream": true, "messages": []}})
        .to_string(),
        line("r8", "gpt-4o", "wrong method").replace("\"POST\"", "\"GET\""),
        line("r9", "gpt-4o", "fine too"),
    ]
    .join("\r\n");
    let id = start_batch(&gateway, OWNER, &bad).await;
    let failed = wait_status(&gateway, &id, "failed").await;
    let errors = failed["errors"]["data"].as_array().unwrap();
    let found: Vec<(String, i64)> = errors
        .iter()
        .map(|error| {
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            (
                error["code"].as_str().unwrap().to_owned(),
                error["line"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 4),
        ("invalid_url", 5),
        ("model_not_found", 6),
        ("invalid_body", 7),
        ("invalid_method", 8),
    ]
    .iter()
    .map(|(code, line)| ((*code).to_owned(), *line))
    .collect();
    assert_eq!(found, expected, "{failed:#}");
    assert_eq!(failed["errors"]["object"], "list");
    assert!(failed["failed_at"].is_i64());
    assert_eq!(failed["in_progress_at"], Value::Null);
    assert_eq!(failed["output_file_id"], Value::Null);
    assert_eq!(failed["error_file_id"], Value::Null);
    assert_eq!(count(&failed, "completed"), 0);

    for empty in ["", "\n\n  \n"] {
        let id = start_batch(&gateway, OWNER, empty).await;
        let failed = wait_status(&gateway, &id, "failed").await;
        assert_eq!(
            failed["errors"]["data"][0]["code"], "empty_file",
            "{failed:#}"
        );
        assert_eq!(count(&failed, "total"), 0);
    }
    assert_eq!(upstream.calls(), 0, "no line of a failed batch runs");
}

#[tokio::test]
async fn lines_the_upstream_refuses_go_to_the_error_file() {
    let good = FakeUpstream::start("oa").await;
    let refusing = FakeUpstream::start("refusing").await;
    refusing.set_default(Behavior::Reply {
        status: 400,
        headers: vec![("content-type", "application/json".into())],
        body: r#"{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}"#.into(),
    });
    let dir = temp_dir("mixed");
    let gateway = TestGateway::start(&config(
        &dir,
        &good,
        "",
        &format!(
            "[[deployments]]\nname = \"refusing\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\n",
            refusing.base_url()
        ),
    ))
    .await;
    // Every third line asks the model whose upstream answers 400.
    let mixed: String = (0..12)
        .map(|i| {
            let model = if i % 3 == 0 { "gpt-4o-mini" } else { "gpt-4o" };
            line(&format!("r{i}"), model, &format!("question {i}")) + "\n"
        })
        .collect();
    let id = start_batch(&gateway, OWNER, &mixed).await;
    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 12, "completed": 8, "failed": 4})
    );
    let output = content(&gateway, OWNER, &done["output_file_id"]).await;
    let errors = content(&gateway, OWNER, &done["error_file_id"]).await;
    let refused: BTreeSet<String> = (0..12).step_by(3).map(|i| format!("r{i}")).collect();
    assert_eq!(custom_ids(&errors), refused);
    assert_eq!(
        custom_ids(&output),
        ids(12).difference(&refused).cloned().collect()
    );
    for error in &errors {
        assert_eq!(error["response"]["status_code"], 400, "{error}");
        assert_eq!(error["response"]["body"]["error"]["message"], "bad request");
    }
    assert!(
        output
            .iter()
            .all(|line| line["response"]["status_code"] == 200)
    );

    let all_refused: String = (0..3)
        .map(|i| line(&format!("r{i}"), "gpt-4o-mini", "q") + "\n")
        .collect();
    let id = start_batch(&gateway, OWNER, &all_refused).await;
    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(done["output_file_id"], Value::Null, "{done:#}");
    assert!(done["error_file_id"].is_string());
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 0, "failed": 3})
    );
    assert_eq!(
        custom_ids(&content(&gateway, OWNER, &done["error_file_id"]).await),
        ids(3)
    );
}

/// Every way `key` could reach the batch `id` and its files, and whether it
/// may.
async fn assert_reach(gateway: &TestGateway, key: &str, done: &Value, allowed: bool) {
    let id = done["id"].as_str().unwrap();
    let expected = if allowed { 200 } else { 404 };
    let paths = [
        format!("/v1/batches/{id}"),
        format!("/v1/files/{}", done["input_file_id"].as_str().unwrap()),
        format!(
            "/v1/files/{}/content",
            done["input_file_id"].as_str().unwrap()
        ),
        format!("/v1/files/{}", done["output_file_id"].as_str().unwrap()),
        format!(
            "/v1/files/{}/content",
            done["output_file_id"].as_str().unwrap()
        ),
    ];
    for path in paths {
        let response = gateway.get_as(key, &path).await;
        assert_eq!(response.status(), expected, "{key} on {path}");
        if !allowed {
            let error = common::gateway::error_of(response).await;
            assert!(!error["message"].as_str().unwrap().is_empty());
        }
    }
    let batches = gateway.get_json("/v1/batches", Some(key)).await;
    let listed = batches["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|batch| batch["id"] == id);
    assert_eq!(listed, allowed, "{key} lists batches: {batches}");
    let files = gateway.get_json("/v1/files", Some(key)).await;
    let listed = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|file| file["id"] == done["input_file_id"]);
    assert_eq!(listed, allowed, "{key} lists files: {files}");
}

#[tokio::test]
async fn another_key_sees_nothing_unless_its_org_shares() {
    let upstream = FakeUpstream::start("oa").await;
    for share in [false, true] {
        let dir = temp_dir("owners");
        let gateway = TestGateway::start(&config(
            &dir,
            &upstream,
            &format!("share_with_org = {share}"),
            "",
        ))
        .await;
        let id = start_batch(&gateway, OWNER, &input(2)).await;
        let done = wait_status(&gateway, &id, "completed").await;
        // The stranger has a batch of its own, which it lists.
        let own = start_batch(&gateway, STRANGER, &input(1)).await;
        assert_reach(&gateway, OWNER, &done, true).await;
        assert_reach(&gateway, STRANGER, &done, false).await;
        assert_reach(&gateway, SIBLING, &done, share).await;
        let listed = gateway.get_json("/v1/batches", Some(STRANGER)).await;
        assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed["data"][0]["id"], own.as_str());
        assert_eq!(listed["object"], "list");
        assert_eq!(listed["has_more"], false);
        if !share {
            // Pages: `after` the last id of the page before; every batch
            // once (ids break ties within one second of `created_at`).
            let mut mine = BTreeSet::from([id.clone()]);
            for _ in 0..2 {
                mine.insert(start_batch(&gateway, OWNER, &input(1)).await);
            }
            let first = gateway.get_json("/v1/batches?limit=2", Some(OWNER)).await;
            assert_eq!(first["has_more"], true, "{first}");
            let rest = gateway
                .get_json(
                    &format!(
                        "/v1/batches?limit=2&after={}",
                        first["last_id"].as_str().unwrap()
                    ),
                    Some(OWNER),
                )
                .await;
            assert_eq!(rest["has_more"], false, "{rest}");
            let paged: Vec<String> = first["data"]
                .as_array()
                .unwrap()
                .iter()
                .chain(rest["data"].as_array().unwrap())
                .map(|batch| batch["id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(paged.len(), 3, "{first} {rest}");
            assert_eq!(paged.into_iter().collect::<BTreeSet<_>>(), mine);
        }

        let cancel = gateway
            .post(
                &format!("/v1/batches/{own}/cancel"),
                Some(OWNER),
                &json!({}),
            )
            .await;
        assert_eq!(
            cancel.status(),
            404,
            "the owner cannot cancel the stranger's batch"
        );
        let cancel = gateway
            .post(
                &format!("/v1/batches/{id}/cancel"),
                Some(STRANGER),
                &json!({}),
            )
            .await;
        assert_eq!(cancel.status(), 404);
        let delete = gateway
            .client
            .delete(gateway.url(&format!(
                "/v1/files/{}",
                done["input_file_id"].as_str().unwrap()
            )))
            .bearer_auth(STRANGER)
            .send()
            .await
            .unwrap();
        assert_eq!(delete.status(), 404);
    }
}

#[tokio::test]
async fn a_cancelled_batch_keeps_what_it_finished() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(400)));
    let dir = temp_dir("cancel");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", "")).await;
    let id = start_batch(&gateway, OWNER, &input(60)).await;
    wait_recorded(&gateway, &id, 1).await;
    let cancelling = gateway
        .post(&format!("/v1/batches/{id}/cancel"), Some(OWNER), &json!({}))
        .await;
    assert_eq!(cancelling.status(), 200);
    let cancelling: Value = cancelling.json().await.unwrap();
    assert_eq!(cancelling["status"], "cancelling", "{cancelling:#}");
    assert!(cancelling["cancelling_at"].is_i64());

    let cancelled = wait_status(&gateway, &id, "cancelled").await;
    assert!(cancelled["cancelled_at"].is_i64());
    let completed = count(&cancelled, "completed");
    assert!(completed >= 1);
    assert!(
        completed < 60,
        "cancel came too late to test: {cancelled:#}"
    );
    let output = content(&gateway, OWNER, &cancelled["output_file_id"]).await;
    assert_eq!(output.len() as i64, completed);
    assert!(custom_ids(&output).is_subset(&ids(60)));
    assert!(upstream.calls() < 60);

    let again = gateway
        .post(&format!("/v1/batches/{id}/cancel"), Some(OWNER), &json!({}))
        .await;
    assert_eq!(again.status(), 409);
    upstream.set_default(Behavior::Echo);
    let finished = start_batch(&gateway, OWNER, &input(2)).await;
    wait_status(&gateway, &finished, "completed").await;
    let late = gateway
        .post(
            &format!("/v1/batches/{finished}/cancel"),
            Some(OWNER),
            &json!({}),
        )
        .await;
    assert_eq!(late.status(), 409);
    let error = common::gateway::error_of(late).await;
    assert!(error["message"].as_str().unwrap().contains("completed"));
}

#[tokio::test]
async fn lines_told_to_wait_are_retried_until_they_complete() {
    let upstream = FakeUpstream::start("oa").await;
    const THROTTLED: usize = 6;
    for _ in 0..THROTTLED {
        upstream.push(Behavior::Reply {
            status: 429,
            headers: vec![
                ("retry-after-ms", "50".into()),
                ("content-type", "application/json".into()),
            ],
            body: r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
        });
    }
    let dir = temp_dir("retry");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", "")).await;
    let id = start_batch(&gateway, OWNER, &input(20)).await;
    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 20, "completed": 20, "failed": 0}),
        "{done:#}"
    );
    assert_eq!(done["error_file_id"], Value::Null);
    let output = content(&gateway, OWNER, &done["output_file_id"]).await;
    assert_eq!(custom_ids(&output), ids(20));
    assert_eq!(
        upstream.calls(),
        20 + THROTTLED,
        "every 429 was answered, each line succeeded once"
    );
}

#[tokio::test]
async fn an_expired_batch_writes_its_unfinished_lines_as_batch_expired() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(400)));
    let dir = temp_dir("expiry");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", "")).await;
    let id = start_batch(&gateway, OWNER, &input(60)).await;
    wait_recorded(&gateway, &id, 1).await;
    let moved = store(&dir)
        .execute(
            "UPDATE sluice_batches SET expires_at = expires_at - 2 * 86400 WHERE id = ?1",
            [&id],
        )
        .unwrap();
    assert_eq!(moved, 1);

    let expired = wait_status(&gateway, &id, "expired").await;
    assert!(expired["expired_at"].is_i64());
    assert_eq!(expired["completed_at"], Value::Null);
    let output = content(&gateway, OWNER, &expired["output_file_id"]).await;
    let errors = content(&gateway, OWNER, &expired["error_file_id"]).await;
    assert!(!output.is_empty(), "finished lines are kept");
    assert!(!errors.is_empty(), "expiry came too late to test");
    assert_eq!(count(&expired, "completed"), output.len() as i64);
    assert_eq!(count(&expired, "failed"), errors.len() as i64);
    for error in &errors {
        assert_eq!(error["response"], Value::Null);
        assert_eq!(error["error"]["code"], "batch_expired", "{error}");
    }
    let done = custom_ids(&output);
    let rest = custom_ids(&errors);
    assert!(done.is_disjoint(&rest));
    assert_eq!(done.union(&rest).cloned().collect::<BTreeSet<_>>(), ids(60));
}

/// Polls the store (the revoked key can no longer ask the API) until the
/// batch is closed; its status.
async fn closed_status(dir: &Path, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: String = store(dir)
            .query_row(
                "SELECT status FROM sluice_batches WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        if !matches!(
            status.as_str(),
            "validating" | "in_progress" | "finalizing" | "cancelling"
        ) {
            return status;
        }
        assert!(Instant::now() < deadline, "batch {id} still {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Revoking a key closes its batches instead of leaving them to spin on
/// every replica: a running one records its unfinished lines as
/// `key_revoked` and completes, a cancelling one is cancelled.
#[tokio::test]
async fn a_revoked_keys_batches_close() {
    const ADMIN: &str = "admin-token-0123456789";
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(300)));
    let dir = temp_dir("revoked");
    let admin_section = format!(
        "[admin]\ntoken = \"{ADMIN}\"\nkeys_store = \"sqlite\"\n\
         [usage]\nstore = \"none\"\ndata_dir = \"{}\"",
        dir.display()
    );
    let toml = config(&dir, &upstream, "max_concurrency = 2", &admin_section);
    let gateway = TestGateway::start(&toml).await;
    let (key_id, secret) = gateway.create_key(ADMIN, "short-lived").await;
    let secret = secret.as_str();
    let running = start_batch(&gateway, secret, &input(40)).await;
    let cancelled = start_batch(&gateway, secret, &input(40)).await;
    let recorded = |id: &str| -> i64 {
        store(&dir)
            .query_row(
                "SELECT COUNT(*) FROM sluice_batch_results WHERE batch_id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while recorded(&running) == 0 {
        assert!(Instant::now() < deadline, "the batch did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = format!("/v1/batches/{cancelled}/cancel");
    assert_eq!(
        gateway
            .post(&cancel, Some(secret), &json!({}))
            .await
            .status(),
        200
    );
    let at_revocation = recorded(&running);
    gateway.revoke_key(ADMIN, &key_id).await;

    assert_eq!(closed_status(&dir, &running).await, "completed");
    assert_eq!(recorded(&running), 40, "every line is recorded once");
    let revoked_lines: i64 = store(&dir)
        .query_row(
            "SELECT COUNT(*) FROM sluice_batch_results WHERE batch_id = ?1 \
             AND output LIKE '%key_revoked%'",
            [&running],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        revoked_lines > 0,
        "no line recorded as key_revoked ({at_revocation} of 40 recorded at revocation)"
    );
    assert_eq!(closed_status(&dir, &cancelled).await, "cancelled");
    // Nothing more is sent for either batch once they are closed.
    let calls = upstream.calls();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(upstream.calls(), calls);
    let refused = gateway
        .get_as(secret, &format!("/v1/batches/{running}"))
        .await;
    assert_eq!(refused.status(), 401);
}

/// One key cannot fill the disk or the runners: past its stored bytes an
/// upload gets 400 until a file goes; past its open batches a new one gets
/// 429. Other keys are not held back.
#[tokio::test]
async fn a_key_is_held_to_its_stored_bytes_and_open_batches() {
    let upstream = FakeUpstream::start("oa").await;
    // Slow enough that the batch below is still open after a delete and an
    // upload.
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(1500)));
    let dir = temp_dir("quotas");
    let limits = "max_stored_bytes_per_key = 1000\nmax_open_batches_per_key = 1";
    let gateway = TestGateway::start(&config(&dir, &upstream, limits, "")).await;
    let three = input(3);
    assert!(three.len() > 334 && three.len() < 500, "{}", three.len());
    let first = upload(&gateway, OWNER, &three).await;
    let second = upload(&gateway, OWNER, &three).await;
    let refused = || async {
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::bytes(three.clone().into_bytes()).file_name("x.jsonl"),
            );
        let url = gateway.url("/v1/files");
        let response = gateway.client.post(url).bearer_auth(OWNER).multipart(form);
        let response = response.send().await.unwrap();
        assert_eq!(response.status(), 400);
        let error = common::gateway::error_of(response).await;
        assert_eq!(error["code"], "file_storage_limit_exceeded", "{error:?}");
    };
    refused().await;
    let listed: Value = gateway
        .get_as(OWNER, "/v1/files")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "nothing kept");
    // Another key has its own allowance.
    upload(&gateway, STRANGER, &three).await;

    let first_id = first["id"].as_str().unwrap();
    let batch = create(&gateway, OWNER, first_id).await;
    let again = gateway
        .post(
            "/v1/batches",
            Some(OWNER),
            &json!({"input_file_id": first_id, "endpoint": "/v1/chat/completions",
                    "completion_window": "24h"}),
        )
        .await;
    assert_eq!(again.status(), 429);
    assert_eq!(again.headers()["retry-after"], "60");
    let error = common::gateway::error_of(again).await;
    assert_eq!(error["code"], "too_many_open_batches", "{error:?}");
    // A deleted input that the open batch still reads still counts.
    let deleted = gateway
        .client
        .delete(gateway.url(&format!("/v1/files/{first_id}")))
        .bearer_auth(OWNER)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    refused().await;
    assert_eq!(
        batch_status(&dir, batch["id"].as_str().unwrap()),
        "in_progress",
        "the batch closed too soon to test"
    );
    // Once the open batch is closed, the key may start another.
    wait_status(&gateway, batch["id"].as_str().unwrap(), "completed").await;
    create(&gateway, OWNER, second["id"].as_str().unwrap()).await;
}

/// Creates racing each other on one replica take exactly the open batches
/// a key may have (across replicas the limit holds; racers may all be refused).
#[tokio::test]
async fn racing_creates_stay_within_the_open_batch_limit() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_secs(5)));
    let dir = temp_dir("race");
    let limits = "max_open_batches_per_key = 2";
    let gateway = TestGateway::start(&config(&dir, &upstream, limits, "")).await;
    let file = upload(&gateway, OWNER, &input(2)).await;
    let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"});
    let creates = (0..10).map(|_| gateway.post("/v1/batches", Some(OWNER), &body));
    let statuses: Vec<u16> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(|response| response.status().as_u16())
        .collect();
    let made = statuses.iter().filter(|status| **status == 200).count();
    assert!(
        statuses.iter().all(|status| matches!(status, 200 | 429)),
        "{statuses:?}"
    );
    assert_eq!(made, 2, "{statuses:?}");
    let open: i64 = store(&dir)
        .query_row("SELECT COUNT(*) FROM sluice_batches", [], |row| row.get(0))
        .unwrap();
    assert_eq!(open as usize, made, "a refused batch is not kept");
}

/// A batch's status in the store (what a revoked key can no longer ask).
fn batch_status(dir: &Path, id: &str) -> String {
    store(dir)
        .query_row(
            "SELECT status FROM sluice_batches WHERE id = ?1",
            [id],
            |row| row.get(0),
        )
        .unwrap()
}

/// A reload that drops a key for a moment (an edit undone within a lease)
/// does not end its running batch: the batch waits, then finishes every
/// line once the key is back.
#[tokio::test]
async fn a_key_dropped_by_a_reload_for_a_moment_keeps_its_batch() {
    const ADMIN: &str = "admin-token-0123456789";
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(300)));
    let dir = temp_dir("dropped");
    let head = format!(
        "[server]\nwatch_config = false\n[admin]\ntoken = \"{ADMIN}\"\nkeys_store = \"none\"\n\
         [usage]\nstore = \"none\"\n{}{}",
        batch_section(&dir, "max_concurrency = 2"),
        deployment("oa", &upstream, "")
    );
    let path = dir.join("sluice.toml");
    let write = |keys: &str| std::fs::write(&path, format!("{head}{keys}")).unwrap();
    write(KEYS);
    let gateway = TestGateway::start_file(&path).await;
    let id = start_batch(&gateway, OWNER, &input(20)).await;
    wait_recorded(&gateway, &id, 1).await;
    let owner = "[[keys]]\nname = \"owner\"\nkey = \"sk-batch-owner-0001\"\norg = \"acme\"\n";
    assert!(KEYS.starts_with(owner));
    write(&KEYS[owner.len()..]);
    gateway.reload(ADMIN).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    write(KEYS);
    gateway.reload(ADMIN).await;
    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(count(&done, "completed"), 20, "{done:#}");
    assert_eq!(count(&done, "failed"), 0, "{done:#}");
}

/// Whether a runner ever claimed any of the batches `ids`.
fn claimed_any(dir: &Path, ids: &[String]) -> bool {
    ids.iter().any(|id| {
        store(dir)
            .query_row(
                "SELECT runner IS NOT NULL FROM sluice_batches WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap()
    })
}

/// Keys take turns for the runner's batch slots (four per replica): a
/// batch of a key with nothing running is claimed before the older batches
/// of a key that has several running. (Oldest first, the first key's fifth
/// and sixth batches would take the next two slots that free.)
#[tokio::test]
async fn a_key_with_many_batches_does_not_hold_back_another_keys() {
    let upstream = FakeUpstream::start("oa").await;
    // Long enough that every batch is made before the first slot frees,
    // on a loaded machine too.
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(3000)));
    let dir = temp_dir("turns");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", "")).await;
    // The first four take the slots a few hundred ms apart, so they free
    // them one at a time.
    let mut owners = Vec::new();
    for _ in 0..4 {
        owners.push(start_batch(&gateway, OWNER, &input(1)).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for _ in 0..2 {
        owners.push(start_batch(&gateway, OWNER, &input(1)).await);
    }
    let strangers = start_batch(&gateway, STRANGER, &input(1)).await;
    assert!(
        !claimed_any(&dir, &owners[4..]),
        "a slot freed before every batch was made"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !claimed_any(&dir, std::slice::from_ref(&strangers)) {
        assert!(Instant::now() < deadline, "the other key's batch never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !claimed_any(&dir, &owners[5..]),
        "the first key's sixth batch ran before the other key's first"
    );
    wait_status(&gateway, &owners[5], "completed").await;
}

/// Waits (bounded) for a shut-down gateway's task to end.
async fn stopped(mut gateway: TestGateway) {
    gateway.shutdown();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the gateway stops")
        .unwrap();
}

#[tokio::test]
async fn a_restarted_gateway_resumes_the_batch_without_repeating_lines() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(300)));
    let dir = temp_dir("resume");
    let toml = config(&dir, &upstream, "", "[server]\nshutdown_grace = \"1s\"\n");
    let first = TestGateway::start(&toml).await;
    let id = start_batch(&first, OWNER, &input(40)).await;
    let before = wait_recorded(&first, &id, 3).await;
    assert_eq!(before["status"], "in_progress");
    stopped(first).await;

    let second = TestGateway::start(&toml).await;
    let done = wait_status(&second, &id, "completed").await;
    let output = content(&second, OWNER, &done["output_file_id"]).await;
    let errors = content(&second, OWNER, &done["error_file_id"]).await;
    assert_eq!(custom_ids(output.iter().chain(&errors)), ids(40));
    assert_eq!(
        done["request_counts"],
        json!({"total": 40, "completed": 40, "failed": 0}),
        "{done:#}"
    );
}

/// A gateway on its own runtime and thread, so a test can kill it the way a
/// crash would: the runtime is dropped, no task runs another step (no lease
/// released, nothing flushed).
struct Crashable {
    addr: std::net::SocketAddr,
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Crashable {
    async fn start(toml: String) -> Self {
        let (ready, addr) = tokio::sync::oneshot::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let gateway = runtime.block_on(TestGateway::start(&toml));
            ready.send(gateway.addr).unwrap();
            let _ = killed.recv();
            // Dropping the gateway would ask it to shut down gracefully.
            #[allow(clippy::mem_forget, reason = "a crash: no graceful shutdown")]
            std::mem::forget(gateway);
            runtime.shutdown_background();
        });
        Self {
            addr: addr.await.unwrap(),
            kill,
            thread,
        }
    }

    async fn crash(self) {
        self.kill.send(()).unwrap();
        tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap();
    }
}

/// The replica holding the batch's lease, as the store says.
async fn runner(database: &tokio_postgres::Client, id: &str) -> Option<String> {
    database
        .query_one("SELECT runner FROM sluice_batches WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_takes_over_a_batch_whose_runner_died() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(500)));
    let database = TestDatabase::create(PLAIN).await;
    let dir = temp_dir("replicas");
    let toml = format!(
        "[batch]\nstore = \"{}\"\nfiles_dir = \"{}/files\"\npoll_interval = \"50ms\"\nlease = \"3s\"\n{}{KEYS}",
        database.url(),
        dir.display(),
        deployment("oa", &upstream, "")
    );
    let (sql, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    let a = Crashable::start(toml.clone()).await;
    let through_a = TestGateway::attach(a.addr);
    let id = start_batch(&through_a, OWNER, &input(200)).await;
    wait_recorded(&through_a, &id, 1).await;
    let holder = runner(&sql, &id)
        .await
        .expect("replica A claimed the batch");

    // B runs beside a live A for longer than a lease: it never claims.
    let b = TestGateway::start(&toml).await;
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(
            runner(&sql, &id).await.as_deref(),
            Some(holder.as_str()),
            "B took a batch A still holds"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_crash = batch(&b, OWNER, &id).await;
    assert_eq!(at_crash["status"], "in_progress", "{at_crash:#}");
    assert!(count(&at_crash, "completed") < 200);
    drop(through_a);
    a.crash().await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(20)));

    let done = wait_status(&b, &id, "completed").await;
    let taker = runner(&sql, &id).await;
    assert!(
        taker.is_some() && taker.as_deref() != Some(holder.as_str()),
        "B finished the batch"
    );
    let output = content(&b, OWNER, &done["output_file_id"]).await;
    let errors = content(&b, OWNER, &done["error_file_id"]).await;
    assert_eq!(custom_ids(output.iter().chain(&errors)), ids(200));
    assert_eq!(
        done["request_counts"],
        json!({"total": 200, "completed": 200, "failed": 0}),
        "{done:#}"
    );
    stopped(b).await;
    drop(sql);
    database.drop_database().await;
}

#[tokio::test]
async fn a_spent_budget_pauses_the_batch_instead_of_failing_lines() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = temp_dir("budget");
    // One echo costs $0.00002875 at gpt-4o prices: the first lines spend it.
    let toml = format!(
        "{}{}[[keys]]\nname = \"thrifty\"\nkey = \"{OWNER}\"\nbudget_daily_usd = 0.00001\n",
        batch_section(&dir, "budget_pause = \"1h\""),
        deployment("oa", &upstream, ""),
    );
    let gateway = TestGateway::start(&toml).await;
    let id = start_batch(&gateway, OWNER, &input(60)).await;
    let store = store(&dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let paused_until: i64 = store
            .query_row(
                "SELECT paused_until FROM sluice_batches WHERE id = ?1",
                [&id],
                |row| row.get(0),
            )
            .unwrap();
        if paused_until > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert!(paused_until > now + 3000, "paused for budget_pause");
            break;
        }
        assert!(Instant::now() < deadline, "the batch never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused = wait_until(
        &gateway,
        &id,
        Duration::from_secs(5),
        "a settled pause",
        |b| b["status"] == "in_progress",
    )
    .await;
    assert_eq!(count(&paused, "failed"), 0, "{paused:#}");
    let completed = count(&paused, "completed");
    assert!((1..60).contains(&completed), "{paused:#}");
    // Paused: no more lines go upstream for a while (ten polls).
    let calls = upstream.calls();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.calls(), calls);
    let still = batch(&gateway, OWNER, &id).await;
    assert_eq!(still["status"], "in_progress");
    assert_eq!(count(&still, "completed"), completed);

    // A paused batch can still be cancelled, without waiting out the pause.
    let cancel = gateway
        .post(&format!("/v1/batches/{id}/cancel"), Some(OWNER), &json!({}))
        .await;
    assert_eq!(cancel.status(), 200);
    let cancelled = wait_status(&gateway, &id, "cancelled").await;
    assert_eq!(count(&cancelled, "completed"), completed);
    assert_eq!(
        content(&gateway, OWNER, &cancelled["output_file_id"])
            .await
            .len() as i64,
        completed
    );
}

#[tokio::test]
async fn a_realtime_call_goes_ahead_of_queued_batch_lines() {
    let upstream = FakeUpstream::start("oa").await;
    let delay = Duration::from_millis(400);
    upstream.set_default(Behavior::DelayHead(delay));
    let dir = temp_dir("priority");
    let gateway = TestGateway::start(&config(
        &dir,
        &upstream,
        "",
        "[server]\nmax_concurrency = 2\n[queue]\nstarvation_every = 1000\nmax_wait_by_class = { batch = \"10m\" }\n",
    ))
    .await;
    let id = start_batch(&gateway, OWNER, &input(200)).await;
    // The batch fills both slots and queues more (its limit starts at 8).
    wait_recorded(&gateway, &id, 4).await;
    let queued = async {
        let text = gateway.metrics().await;
        text.lines()
            .filter(|line| line.starts_with("sluice_queue_depth"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let waiting = queued.await;
    assert!(
        waiting >= 4.0,
        "batch lines queue behind 2 slots: {waiting}"
    );

    let sent_after = upstream.calls();
    let started = Instant::now();
    let mut body = chat("gpt-4o");
    body["messages"][0]["content"] = json!("realtime question");
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(OWNER)
        .header("x-sluice-priority", "realtime")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let latency = started.elapsed();
    let position = upstream
        .recorded()
        .iter()
        .position(|request| request.body["messages"][0]["content"] == "realtime question")
        .unwrap();
    // FIFO would have put it behind the queued lines (at least 4 more
    // arrivals); ahead of them it is among the next two to start.
    assert!(
        position < sent_after + 3,
        "realtime call was arrival {position}, {sent_after} had arrived when it was sent"
    );
    assert!(
        latency < delay * 3,
        "realtime call took {latency:?} behind {waiting} queued lines"
    );
    let shown = batch(&gateway, OWNER, &id).await;
    assert_eq!(shown["status"], "in_progress", "the batch is still running");
    let cancel = gateway
        .post(&format!("/v1/batches/{id}/cancel"), Some(OWNER), &json!({}))
        .await;
    assert_eq!(cancel.status(), 200);
}

/// `sluice_cost_usd_total{model="gpt-4o"}`, 0 before any cost.
async fn cost(gateway: &TestGateway) -> f64 {
    let text = gateway.metrics().await;
    text.lines()
        .filter(|line| line.starts_with("sluice_cost_usd_total") && line.contains("gpt-4o"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn batch_lines_cost_the_discounted_price() {
    let upstream = FakeUpstream::start("oa").await;
    let dir = temp_dir("discount");
    let gateway = TestGateway::start(&config(&dir, &upstream, "discount = 0.5", "")).await;
    let response = gateway
        .post("/v1/chat/completions", Some(OWNER), &chat("gpt-4o"))
        .await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let realtime = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let spent = cost(&gateway).await;
            if spent > 0.0 {
                break spent;
            }
            assert!(
                Instant::now() < deadline,
                "the realtime call was never priced"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let id = start_batch(&gateway, OWNER, &input(4)).await;
    wait_status(&gateway, &id, "completed").await;
    // The same usage as the realtime call, four times, at half price.
    let expected = realtime + 4.0 * realtime * 0.5;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = cost(&gateway).await;
        if (total - expected).abs() < 1e-12 {
            break;
        }
        assert!(
            total <= expected + 1e-12 && Instant::now() < deadline,
            "cost {total}, expected {expected} (realtime call {realtime})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On PostgreSQL, a store made before a column gets it at its next
/// connection, and a store that has it opens as it is, any number of times.
#[tokio::test]
async fn a_postgres_store_made_before_a_column_gets_it() {
    use sluice::config::KeysStoreSpec;
    use sluice::infra::sql::{Db, Schema};
    let database = TestDatabase::create(PLAIN).await;
    let spec = KeysStoreSpec::Postgres(database.url());
    let tasks = sluice::util::tasks::Tasks::new();
    let schema = "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY);";
    let plain = Schema {
        statements: schema,
        added: &[],
        then: "",
    };
    let old = Db::open(&spec, plain, &tasks).unwrap();
    let insert = old.execute("INSERT INTO t (id) VALUES ($1)", vec!["a".into()]);
    assert_eq!(insert.await.unwrap(), 1);
    for n in 0..3i64 {
        let added = Schema {
            statements: schema,
            added: &[("t", "added BIGINT")],
            then: "",
        };
        let db = Db::open(&spec, added, &tasks).unwrap();
        let update = db.execute("UPDATE t SET added = $1 WHERE id = 'a'", vec![n.into()]);
        assert_eq!(update.await.unwrap(), 1);
    }
    database.drop_database().await;
}

/// The operator (`/admin/batches`, behind the admin token) lists every
/// key's batches with their owners and cancels any of them; a key's token
/// does not open those routes.
#[tokio::test]
async fn the_operator_sees_and_cancels_every_keys_batches() {
    const ADMIN: &str = "admin-token-batches-01";
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_millis(400)));
    let dir = temp_dir("operator");
    let admin = format!("[admin]\ntoken = \"{ADMIN}\"\n");
    let gateway = TestGateway::start(&config(&dir, &upstream, "", &admin)).await;
    let mine = start_batch(&gateway, OWNER, &input(40)).await;
    let theirs = start_batch(&gateway, STRANGER, &input(40)).await;

    let listed = gateway.get_json("/admin/batches", Some(ADMIN)).await;
    let data = listed["data"].as_array().unwrap();
    let ids: BTreeSet<&str> = data.iter().filter_map(|b| b["id"].as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([mine.as_str(), theirs.as_str()]),
        "{listed}"
    );
    let owners: BTreeSet<&str> = data.iter().filter_map(|b| b["owner"].as_str()).collect();
    assert_eq!(owners.len(), 2, "each batch names its key: {listed}");
    let paged = gateway
        .get_json("/admin/batches?limit=1", Some(ADMIN))
        .await;
    assert_eq!(paged["has_more"], true, "{paged}");
    let refused = gateway
        .post(
            &format!("/admin/batches/{mine}/cancel"),
            Some(STRANGER),
            &json!({}),
        )
        .await;
    assert_eq!(refused.status(), 401);

    wait_recorded(&gateway, &mine, 1).await;
    let cancel = format!("/admin/batches/{mine}/cancel");
    let cancelling = gateway.post(&cancel, Some(ADMIN), &json!({})).await;
    assert_eq!(cancelling.status(), 200);
    let cancelled = wait_status(&gateway, &mine, "cancelled").await;
    assert!(count(&cancelled, "completed") < 40, "{cancelled:#}");
    let other = gateway
        .get_json(&format!("/admin/batches/{theirs}"), Some(ADMIN))
        .await;
    assert!(
        matches!(other["status"].as_str(), Some("validating" | "in_progress")),
        "{other}"
    );
}
