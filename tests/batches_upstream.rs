//! Batches forwarded to a provider's Batch API (`batch = "upstream"` on a
//! deployment), against a fake provider on a real socket that keeps the
//! uploaded file, reports a batch `in_progress` for a few polls, then
//! `completed` with output and error files made from the input lines; it
//! can fail polls, refuse creates and hold batches open for a cancel.
#![allow(clippy::disallowed_methods, reason = "tests own their tasks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::TestGateway;
use common::batch_api::start_batch;
use common::process::TempDir;
use serde_json::{Value, json};

const OWNER: &str = "sk-upbatch-owner-0001";
const STRANGER: &str = "sk-upbatch-stranger-0002";

const KEYS: &str = "[[keys]]\nname = \"owner\"\nkey = \"sk-upbatch-owner-0001\"\norg = \"acme\"\n\
[[keys]]\nname = \"stranger\"\nkey = \"sk-upbatch-stranger-0002\"\norg = \"other\"\n";

/// One call the fake provider received.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

#[derive(Debug, Clone)]
struct FakeBatch {
    input_file_id: String,
    endpoint: String,
    status: String,
    polls: u32,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    total: usize,
    completed: usize,
    failed: usize,
}

#[derive(Default)]
struct ProviderState {
    files: HashMap<String, Vec<u8>>,
    batches: HashMap<String, FakeBatch>,
    calls: Vec<Call>,
    /// Polls answered 500 before any other.
    fail_polls: usize,
    /// Batches stay `in_progress` until cancelled.
    hold: bool,
    /// Creates are refused with a 400.
    refuse_create: bool,
    next: u64,
}

impl ProviderState {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-up{}", self.next)
    }

    fn record(
        &mut self,
        method: &'static str,
        path: String,
        query: Option<String>,
        headers: &HeaderMap,
    ) {
        self.calls.push(Call {
            method,
            path,
            query,
            headers: headers.clone(),
        });
    }
}

type Shared = Arc<Mutex<ProviderState>>;

/// A fake OpenAI (under `/v1`) and Azure (under `/openai`) Files and
/// Batch API.
struct FakeProvider {
    addr: SocketAddr,
    state: Shared,
}

impl FakeProvider {
    async fn start() -> Self {
        let state = Shared::default();
        let api = Router::new()
            .route("/files", post(upload_file))
            .route("/files/{id}/content", get(file_content))
            .route("/batches", post(create_batch))
            .route("/batches/{id}", get(retrieve_batch))
            .route("/batches/{id}/cancel", post(cancel_batch));
        let app = Router::new()
            .nest("/v1", api.clone())
            .nest("/openai", api)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProviderState> {
        self.state.lock().unwrap()
    }

    fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The one batch created, once there is one (within 20 s).
    async fn created_batch(&self) -> FakeBatch {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(batch) = self.state().batches.values().next().cloned() {
                return batch;
            }
            assert!(Instant::now() < deadline, "no batch was created upstream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn file(&self, id: &str) -> Vec<u8> {
        self.state().files.get(id).cloned().unwrap()
    }
}

fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: &Value) -> Response {
    reply(StatusCode::OK, body)
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    reply(status, &body)
}

async fn upload_file(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let (mut purpose, mut bytes) = (None, None);
    while let Some(field) = form.next_field().await.unwrap() {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.unwrap()),
            Some("file") => bytes = Some(field.bytes().await.unwrap().to_vec()),
            _ => {}
        }
    }
    let mut state = state.lock().unwrap();
    state.record("POST", "files".into(), query, &headers);
    if purpose.as_deref() != Some("batch") {
        return error(StatusCode::BAD_REQUEST, "purpose must be batch");
    }
    let bytes = bytes.unwrap_or_default();
    let id = state.id("file");
    let length = bytes.len();
    state.files.insert(id.clone(), bytes);
    ok(&json!({"id": id, "object": "file", "purpose": "batch", "bytes": length}))
}

async fn file_content(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut state = state.lock().unwrap();
    state.record("GET", format!("files/{id}/content"), query, &headers);
    match state.files.get(&id) {
        Some(bytes) => bytes.clone().into_response(),
        None => error(StatusCode::NOT_FOUND, "no such file"),
    }
}

async fn create_batch(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let asked: Value = serde_json::from_slice(&body).unwrap();
    let mut state = state.lock().unwrap();
    state.record("POST", "batches".into(), query, &headers);
    if state.refuse_create {
        return error(StatusCode::BAD_REQUEST, "endpoint not supported here");
    }
    let input_file_id = asked["input_file_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(input) = state.files.get(&input_file_id) else {
        return error(StatusCode::BAD_REQUEST, "no such input file");
    };
    assert_eq!(asked["completion_window"], "24h");
    let total = String::from_utf8_lossy(input).lines().count();
    let id = state.id("batch");
    let batch = FakeBatch {
        input_file_id,
        endpoint: asked["endpoint"].as_str().unwrap_or_default().to_owned(),
        status: "validating".into(),
        polls: 0,
        output_file_id: None,
        error_file_id: None,
        total,
        completed: 0,
        failed: 0,
    };
    let object = batch_object(&id, &batch);
    state.batches.insert(id, batch);
    ok(&object)
}

async fn retrieve_batch(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut state = state.lock().unwrap();
    state.record("GET", format!("batches/{id}"), query, &headers);
    if state.fail_polls > 0 {
        state.fail_polls -= 1;
        return error(StatusCode::INTERNAL_SERVER_ERROR, "try again");
    }
    let hold = state.hold;
    let Some(mut batch) = state.batches.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, "no such batch");
    };
    batch.polls += 1;
    match batch.status.as_str() {
        "cancelling" => batch.status = "cancelled".into(),
        "validating" | "in_progress" if hold || batch.polls < 3 => {
            batch.status = "in_progress".into();
        }
        "validating" | "in_progress" => finish(&mut state, &mut batch),
        _ => {}
    }
    let object = batch_object(&id, &batch);
    state.batches.insert(id, batch);
    ok(&object)
}

/// Answers every input line: `bad*` custom ids go to the error file.
fn finish(state: &mut ProviderState, batch: &mut FakeBatch) {
    let input = String::from_utf8_lossy(&state.files[&batch.input_file_id]).into_owned();
    let (mut output, mut errors) = (String::new(), String::new());
    for (n, text) in input.lines().enumerate() {
        let line: Value = serde_json::from_str(text).unwrap();
        let custom_id = line["custom_id"].as_str().unwrap();
        if custom_id.starts_with("bad") {
            let answer = json!({"id": format!("batch_req_{n}"), "custom_id": custom_id, "response": null,
                "error": {"code": "invalid_prompt", "message": "refused"}});
            errors.push_str(&format!("{answer}\n"));
            batch.failed += 1;
        } else {
            let body = json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion",
                "model": line["body"]["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from the provider"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
            let answer = json!({"id": format!("batch_req_{n}"), "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": format!("req_{n}"), "body": body}, "error": null});
            output.push_str(&format!("{answer}\n"));
            batch.completed += 1;
        }
    }
    for (text, slot) in [
        (output, &mut batch.output_file_id),
        (errors, &mut batch.error_file_id),
    ] {
        if !text.is_empty() {
            let id = state.id("file");
            state.files.insert(id.clone(), text.into_bytes());
            *slot = Some(id);
        }
    }
    batch.status = "completed".into();
}

async fn cancel_batch(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut state = state.lock().unwrap();
    state.record("POST", format!("batches/{id}/cancel"), query, &headers);
    let Some(batch) = state.batches.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "no such batch");
    };
    batch.status = "cancelling".into();
    let object = batch_object(&id, batch);
    ok(&object)
}

fn batch_object(id: &str, batch: &FakeBatch) -> Value {
    json!({
        "id": id, "object": "batch", "endpoint": batch.endpoint, "status": batch.status,
        "input_file_id": batch.input_file_id, "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id, "completion_window": "24h", "errors": null,
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
    })
}

/// A fresh directory for one test's job store and files.
fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("sluice-upbatch-{tag}"))
}

fn config(dir: &FsPath, deployment: &str) -> String {
    format!(
        "[batch]\nstore = \"sqlite:{0}/jobs.sqlite\"\nfiles_dir = \"{0}/files\"\n\
         poll_interval = \"50ms\"\nlease = \"3s\"\nupstream_poll_interval = \"100ms\"\n\
         {deployment}\n{KEYS}",
        dir.display()
    )
}

/// An OpenAI deployment forwarding batches, calling `gpt-4o` `gpt-4o-up`.
fn openai(provider: &FakeProvider) -> String {
    format!(
        "[[deployments]]\nname = \"oa\"\nprovider = \"openai\"\nbase_url = \"http://{}/v1\"\n\
         api_key = \"sk-provider\"\nmodels = [\"gpt-4o\"]\nbatch = \"upstream\"\n\
         model_map = {{ \"gpt-4o\" = \"gpt-4o-up\" }}\n",
        provider.addr
    )
}

fn input(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|custom_id| {
            json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": custom_id}]}})
            .to_string()
                + "\n"
        })
        .collect()
}

/// Polls the batch until its status is `status` (within 20 s).
async fn wait_status(gateway: &TestGateway, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown: Value = gateway
            .get_as(OWNER, &format!("/v1/batches/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if shown["status"] == status {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "batch never reached {status}: {shown:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn file_text(gateway: &TestGateway, key: &str, id: &Value) -> reqwest::Response {
    gateway
        .get_as(key, &format!("/v1/files/{}/content", id.as_str().unwrap()))
        .await
}

#[tokio::test]
async fn a_forwarded_batch_mirrors_the_providers_batch_and_its_files() {
    let provider = FakeProvider::start().await;
    let dir = temp_dir("flow");
    let gateway = TestGateway::start(&config(&dir.0, &openai(&provider))).await;
    let id = start_batch(&gateway, OWNER, &input(&["r0", "r1", "bad0"])).await;

    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    // Summed from the output's lines: 10 prompt and 5 completion tokens each.
    assert_eq!(done["usage"]["input_tokens"], 20);
    assert_eq!(done["usage"]["output_tokens"], 10);
    assert_eq!(done["model"], "gpt-4o");
    assert!(done["completed_at"].is_i64());

    let upstream = provider.created_batch().await;
    assert_eq!(upstream.endpoint, "/v1/chat/completions");
    let sent = String::from_utf8(provider.file(&upstream.input_file_id)).unwrap();
    let sent: Vec<Value> = sent
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent.len(), 3);
    for line in &sent {
        assert_eq!(line["body"]["model"], "gpt-4o-up", "model renamed: {line}");
        assert_eq!(line["url"], "/v1/chat/completions");
    }

    // The local files hold exactly the provider's bytes.
    for (local, remote) in [
        (&done["output_file_id"], &upstream_file(&provider, true)),
        (&done["error_file_id"], &upstream_file(&provider, false)),
    ] {
        let response = file_text(&gateway, OWNER, local).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), remote.as_slice());
    }
    let meta: Value = gateway
        .get_as(
            OWNER,
            &format!("/v1/files/{}", done["output_file_id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["purpose"], "batch_output");

    // Another tenant sees neither the batch nor its files.
    let other = gateway.get_as(STRANGER, &format!("/v1/batches/{id}")).await;
    assert_eq!(other.status(), 404);
    assert_eq!(
        file_text(&gateway, STRANGER, &done["output_file_id"])
            .await
            .status(),
        404
    );

    let calls = provider.calls();
    assert_eq!(
        calls.iter().filter(|call| call.path == "files").count(),
        1,
        "uploaded once"
    );
    assert_eq!(
        calls.iter().filter(|call| call.path == "batches").count(),
        1,
        "created once"
    );
    assert!(
        calls
            .iter()
            .all(|call| call.headers["authorization"] == "Bearer sk-provider")
    );
    assert!(calls.iter().all(|call| call.query.is_none()));
}

/// The provider ran the lines, so the pipeline never metered them: the
/// closed batch is billed once, at the model's price less
/// `upstream_discount`, to the key's budget, the metrics and the ledger.
#[tokio::test]
async fn a_forwarded_batch_is_billed_once_when_it_closes() {
    const ADMIN: &str = "admin-token-0123456789";
    let provider = FakeProvider::start().await;
    let dir = temp_dir("billed");
    let toml = format!(
        "[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"20ms\"\n\
         [admin]\ntoken = \"{ADMIN}\"\n\
         [pricing.\"gpt-4o\"]\ninput_per_1m = 2.5\noutput_per_1m = 10.0\n\
         [org_budgets.acme]\nbudget_daily_usd = 1.0\n{}",
        dir.0.display(),
        config(&dir.0, &openai(&provider))
    );
    let gateway = TestGateway::start(&toml).await;
    let id = start_batch(&gateway, OWNER, &input(&["r0", "r1", "bad0"])).await;
    wait_status(&gateway, &id, "completed").await;
    // 20 prompt and 10 completion tokens at $2.50 and $10 per million,
    // half off.
    let billed = (20.0 * 2.5 + 10.0 * 10.0) / 1e6 * 0.5;
    let close = |value: f64| (value - billed).abs() < 1e-12;

    let metrics = gateway.metrics().await;
    let cost = metrics
        .lines()
        .find(|line| line.starts_with("sluice_cost_usd_total{model=\"gpt-4o\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(cost.is_some_and(close), "{cost:?}");
    assert!(
        metrics
            .contains("sluice_tokens_total{deployment=\"oa\",model=\"gpt-4o\",type=\"prompt\"} 20")
    );
    let budgets = gateway.get_json("/admin/budgets", Some(ADMIN)).await;
    let spent = budgets["data"][0]["spent_usd"].as_f64();
    assert!(spent.is_some_and(close), "{budgets}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let usage = gateway
            .get_json("/admin/usage?group_by=tag", Some(ADMIN))
            .await;
        if let Some(row) = usage["data"].as_array().and_then(|rows| rows.first()) {
            break row.clone();
        }
        assert!(Instant::now() < deadline, "no ledger record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row["group"], format!("sluice-internal:batch:{id}"));
    assert_eq!(row["requests"], 1, "one record for the batch: {row}");
    assert_eq!(row["prompt_tokens"], 20);
    assert!(row["cost_usd"].as_f64().is_some_and(close), "{row}");
}

/// The provider's output (or error) file for the one batch.
fn upstream_file(provider: &FakeProvider, output: bool) -> Vec<u8> {
    let state = provider.state();
    let batch = state.batches.values().next().unwrap();
    let id = if output {
        &batch.output_file_id
    } else {
        &batch.error_file_id
    };
    state.files[id.as_ref().unwrap()].clone()
}

#[tokio::test]
async fn a_cancel_is_passed_on_and_the_batch_ends_cancelled() {
    let provider = FakeProvider::start().await;
    provider.state().hold = true;
    let dir = temp_dir("cancel");
    let gateway = TestGateway::start(&config(&dir.0, &openai(&provider))).await;
    let id = start_batch(&gateway, OWNER, &input(&["r0", "r1"])).await;
    provider.created_batch().await;
    // Wait until the id is recorded and the batch is being polled.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !provider
        .calls()
        .iter()
        .any(|call| call.path.starts_with("batches/"))
    {
        assert!(Instant::now() < deadline, "the batch was never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let running: Value = gateway
        .get_as(OWNER, &format!("/v1/batches/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(running["status"], "in_progress");
    assert_eq!(
        running["request_counts"],
        json!({"total": 2, "completed": 0, "failed": 0})
    );
    let response = gateway
        .post(&format!("/v1/batches/{id}/cancel"), Some(OWNER), &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    let done = wait_status(&gateway, &id, "cancelled").await;
    assert!(done["cancelled_at"].is_i64());
    assert!(
        provider
            .calls()
            .iter()
            .any(|call| call.method == "POST" && call.path.ends_with("/cancel")),
        "the cancel reached the provider"
    );
    assert_eq!(provider.created_batch().await.status, "cancelled");
}

#[tokio::test]
async fn a_provider_error_while_polling_is_retried() {
    let provider = FakeProvider::start().await;
    provider.state().fail_polls = 3;
    let dir = temp_dir("retry");
    let gateway = TestGateway::start(&config(&dir.0, &openai(&provider))).await;
    let id = start_batch(&gateway, OWNER, &input(&["r0"])).await;
    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(done["request_counts"]["completed"], 1);
    let polls = provider
        .calls()
        .iter()
        .filter(|call| call.path.starts_with("batches/"))
        .count();
    assert!(polls >= 6, "3 failed polls and 3 answered: {polls}");
}

#[tokio::test]
async fn a_provider_refusing_the_batch_fails_it_with_its_message() {
    let provider = FakeProvider::start().await;
    provider.state().refuse_create = true;
    let dir = temp_dir("refuse");
    let gateway = TestGateway::start(&config(&dir.0, &openai(&provider))).await;
    let id = start_batch(&gateway, OWNER, &input(&["r0"])).await;
    let done = wait_status(&gateway, &id, "failed").await;
    let error = &done["errors"]["data"][0];
    assert_eq!(error["code"], "upstream_refused");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("endpoint not supported here"),
        "{error}"
    );
}

#[tokio::test]
async fn an_azure_deployment_uses_its_paths_version_and_key() {
    let provider = FakeProvider::start().await;
    let dir = temp_dir("azure");
    let deployment = format!(
        "[[deployments]]\nname = \"az\"\nprovider = \"azure\"\nbase_url = \"http://{}\"\n\
         api_key = \"az-secret\"\napi_version = \"2024-10-21\"\nmodels = [\"gpt-4o\"]\n\
         batch = \"upstream\"\nmodel_map = {{ \"gpt-4o\" = \"my-gpt4o-batch\" }}\n",
        provider.addr
    );
    let gateway = TestGateway::start(&config(&dir.0, &deployment)).await;
    let id = start_batch(&gateway, OWNER, &input(&["r0", "r1"])).await;
    let done = wait_status(&gateway, &id, "completed").await;
    assert_eq!(done["request_counts"]["completed"], 2);

    let upstream = provider.created_batch().await;
    assert_eq!(upstream.endpoint, "/chat/completions");
    let sent = String::from_utf8(provider.file(&upstream.input_file_id)).unwrap();
    for line in sent.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["url"], "/chat/completions");
        assert_eq!(line["body"]["model"], "my-gpt4o-batch");
    }
    let calls = provider.calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(
            call.query.as_deref(),
            Some("api-version=2024-10-21"),
            "{call:?}"
        );
        assert_eq!(call.headers["api-key"], "az-secret");
        assert!(call.headers.get("authorization").is_none());
    }
}

#[tokio::test]
async fn upstream_batches_need_a_real_provider() {
    let dir = temp_dir("config");
    let mock = "[[deployments]]\nname = \"m\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n\
                batch = \"upstream\"\n";
    let error = sluice::config::load_from_str(&config(&dir.0, mock), "t", &HashMap::new())
        .expect_err("a mock deployment cannot forward batches");
    assert!(error.to_string().contains("batch"), "{error}");
}
