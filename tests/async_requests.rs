//! Asynchronous requests: `Prefer: respond-async` answers 202 with a job,
//! `GET /v1/async/{id}` gives the answer the synchronous call would have,
//! callbacks reach allowed hosts, and jobs survive a restart.
#![allow(clippy::disallowed_methods, reason = "tests own their tasks")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::gateway::{chat, deployment, error_of};
use common::process::TempDir;
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const KEY: &str = "sk-async-key-0001";
const OTHER: &str = "sk-async-key-0002";
const ADMIN: &str = "admin-token-0123456789";

/// A fresh directory for one test's job store, removed at its end.
fn store_dir() -> TempDir {
    TempDir::new("sluice-async")
}

fn config(dir: &Path, upstream: &FakeUpstream, extra: &str) -> String {
    format!(
        "[batch]\nstore = \"sqlite:{dir}/jobs.sqlite\"\nfiles_dir = \"{dir}/files\"\n\
         poll_interval = \"100ms\"\nlease = \"3s\"\n\
         [async_requests]\ncallback_hosts = [\"127.0.0.1\"]\n{extra}\n\
         [[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n\
         [[keys]]\nname = \"other\"\nkey = \"{OTHER}\"\n{}",
        deployment("up", upstream, ""),
        dir = dir.display(),
    )
}

/// POSTs a chat call asking for an asynchronous answer.
async fn post_async(
    gateway: &TestGateway,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    let mut request = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("prefer", "respond-async")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The job's id from a 202, after checking its shape.
async fn accepted(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("async_"), "{job}");
    assert_eq!(job["object"], "async_request");
    assert_eq!(job["status"], "queued");
    assert_eq!(location, format!("/v1/async/{id}"));
    assert_eq!(job["url"], location.as_str());
    assert!(job["expires_at"].as_i64().unwrap() > job["created_at"].as_i64().unwrap());
    id
}

/// Polls the job until it is answered (within 15 s).
async fn answer(gateway: &TestGateway, id: &str, key: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = gateway
            .client
            .get(gateway.url(&format!("/v1/async/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        if response.status() != 202 {
            return response;
        }
        assert_eq!(response.headers()["retry-after"], "1");
        let job: Value = response.json().await.unwrap();
        assert!(matches!(
            job["status"].as_str(),
            Some("queued" | "in_progress")
        ));
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} not answered in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_is_answered_later_with_what_a_synchronous_call_returns() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;

    let sync = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    assert_eq!(sync.status(), 200);
    let sync: Value = sync.json().await.unwrap();

    let asked = post_async(&gateway, &[], &chat("gpt-4o")).await;
    assert_eq!(asked.headers()["preference-applied"], "respond-async");
    let id = accepted(asked).await;
    let done = answer(&gateway, &id, KEY).await;
    assert_eq!(done.status(), 200);
    assert_eq!(done.headers()["x-sluice-async-id"], id.as_str());
    assert!(
        done.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let stored: Value = done.json().await.unwrap();
    assert_eq!(stored, sync);

    // The replayed call reached the upstream like the synchronous one, with
    // the deployment's credentials, not the client's key.
    assert_eq!(upstream.calls(), 2);
    let replayed = upstream.last();
    assert_eq!(replayed.body["model"], "gpt-4o");
    let auth = replayed
        .headers
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned());
    assert!(auth.is_none_or(|auth| !auth.contains(KEY)));

    // The same answer again, to another poll.
    let again = answer(&gateway, &id, KEY).await;
    assert_eq!(again.json::<Value>().await.unwrap(), sync);
}

#[tokio::test]
async fn x_sluice_async_asks_the_same() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;
    let response = gateway
        .client
        .post(gateway.url("/openai/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-sluice-async", "true")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    let id = accepted(response).await;
    assert_eq!(answer(&gateway, &id, KEY).await.status(), 200);
}

#[tokio::test]
async fn upstream_errors_are_stored_with_their_status() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;

    upstream.set_default(Behavior::server_error());
    let id = accepted(post_async(&gateway, &[], &chat("gpt-4o")).await).await;
    let done = answer(&gateway, &id, KEY).await;
    assert_eq!(done.status(), 500);
    error_of(done).await;
}

/// An answer past the 32 MiB kept for a job is not held: the gateway stops
/// reading it and stores a 502 saying why.
#[tokio::test]
async fn an_answer_too_large_to_keep_is_stored_as_a_502() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;
    upstream.set_default(Behavior::Huge {
        status: 200,
        bytes: 40 * 1024 * 1024,
    });
    let id = accepted(post_async(&gateway, &[], &chat("gpt-4o")).await).await;
    let done = answer(&gateway, &id, KEY).await;
    assert_eq!(done.status(), 502);
    assert_eq!(error_of(done).await["code"], "response_too_large");
    assert!(upstream.wait_stream_dropped(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn throttled_answers_are_stored_as_the_answer() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    // One attempt: the 429 is the pipeline's answer, not waited out.
    let toml = config(&dir, &upstream, "") + "[retry]\nmax_attempts = 1\n";
    let gateway = TestGateway::start(&toml).await;
    upstream.set_default(Behavior::Reply {
        status: 429,
        headers: vec![],
        body: r#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#.into(),
    });
    let id = accepted(post_async(&gateway, &[], &chat("gpt-4o")).await).await;
    let done = answer(&gateway, &id, KEY).await;
    assert_eq!(done.status(), 429);
    error_of(done).await;
}

#[tokio::test]
async fn only_the_key_that_asked_sees_the_job() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;
    let id = accepted(post_async(&gateway, &[], &chat("gpt-4o")).await).await;
    assert_eq!(answer(&gateway, &id, KEY).await.status(), 200);

    let response = gateway
        .client
        .get(gateway.url(&format!("/v1/async/{id}")))
        .bearer_auth(OTHER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    error_of(response).await;
    let unknown = gateway
        .client
        .get(gateway.url("/v1/async/async_nosuchjob"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let anonymous = gateway
        .client
        .get(gateway.url(&format!("/v1/async/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn what_cannot_be_answered_later_is_refused_at_once() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;

    let mut streamed = chat("gpt-4o");
    streamed["stream"] = json!(true);
    let response = post_async(&gateway, &[], &streamed).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["param"], "stream");

    let bad_host = post_async(
        &gateway,
        &[("x-sluice-callback", "https://evil.example/hook")],
        &chat("gpt-4o"),
    )
    .await;
    assert_eq!(bad_host.status(), 400);
    assert_eq!(error_of(bad_host).await["param"], "x-sluice-callback");

    let form = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("prefer", "respond-async")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let message = error_of(form).await["message"].as_str().unwrap().to_owned();
    assert!(message.contains("JSON"), "{message}");

    let not_json = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("prefer", "respond-async")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn callbacks_are_refused_when_no_host_is_allowed() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = config(&dir, &upstream, "")
        .replace("callback_hosts = [\"127.0.0.1\"]", "callback_hosts = []");
    let gateway = TestGateway::start(&toml).await;
    let response = post_async(
        &gateway,
        &[("x-sluice-callback", "http://127.0.0.1:9/hook")],
        &chat("gpt-4o"),
    )
    .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn without_the_preference_calls_are_answered_as_before() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("prefer", "return=minimal")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("location").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
}

#[tokio::test]
async fn disabled_async_requests_are_answered_synchronously() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = config(&dir, &upstream, "enabled = false");
    let gateway = TestGateway::start(&toml).await;
    let response = post_async(&gateway, &[], &chat("gpt-4o")).await;
    assert_eq!(response.status(), 200);
}

/// A callback receiver on 127.0.0.1: its URL, and what it is sent.
/// A callback endpoint that answers after `delay`, handing on each body.
async fn callback_receiver(
    delay: Duration,
) -> (
    String,
    tokio::sync::mpsc::Receiver<(http::HeaderMap, Value)>,
) {
    let (sender, received) = tokio::sync::mpsc::channel::<(http::HeaderMap, Value)>(4);
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap();
                sender.send((headers, body)).await.unwrap();
                tokio::time::sleep(delay).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    (hook, received)
}

#[tokio::test]
async fn the_callback_receives_the_job_and_its_answer() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let (hook, mut received) = callback_receiver(Duration::ZERO).await;

    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;
    let response = post_async(&gateway, &[("x-sluice-callback", &hook)], &chat("gpt-4o")).await;
    let id = accepted(response).await;
    let (headers, delivered) = tokio::time::timeout(Duration::from_secs(15), received.recv())
        .await
        .expect("the callback arrived")
        .unwrap();
    assert_eq!(delivered["id"], id.as_str());
    assert_eq!(delivered["object"], "async_request");
    assert_eq!(delivered["status"], "completed");
    assert_eq!(delivered["response"]["status_code"], 200);
    assert_eq!(delivered["response"]["body"]["object"], "chat.completion");
    assert!(headers.get("authorization").is_none());

    // Delivered once: the row says so, and no second one comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state = query(&dir, "SELECT callback_state FROM sluice_async_jobs");
        if state == vec![vec!["delivered".to_owned()]] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = tokio::time::timeout(Duration::from_millis(500), received.recv()).await;
    assert!(again.is_err(), "the callback was delivered twice");
}

#[tokio::test]
async fn a_job_survives_a_restart() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    // The first run hangs: the gateway stops while the job is in flight.
    upstream.push(Behavior::DelayHead(Duration::from_secs(120)));
    let toml = config(&dir, &upstream, "");
    let mut first = TestGateway::start(&toml).await;
    let id = accepted(post_async(&first, &[], &chat("gpt-4o")).await).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.calls() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.shutdown();
    tokio::time::timeout(Duration::from_secs(20), first.task.take().unwrap())
        .await
        .expect("the first gateway stopped")
        .unwrap();

    let second = TestGateway::start(&toml).await;
    let done = answer(&second, &id, KEY).await;
    assert_eq!(done.status(), 200);
    let body: Value = done.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn a_job_whose_replica_died_is_run_once_its_lease_runs_out() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = config(&dir, &upstream, "");
    upstream.push(Behavior::DelayHead(Duration::from_secs(120)));
    let mut first = TestGateway::start(&toml).await;
    accepted(post_async(&first, &[], &chat("gpt-4o")).await).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.calls() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.shutdown();
    tokio::time::timeout(Duration::from_secs(20), first.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();
    // As a replica that died mid-call leaves it: in progress, leased 2 s more.
    let lease_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 2000;
    let connection = rusqlite::Connection::open(dir.join("jobs.sqlite")).unwrap();
    connection
        .execute(
            "UPDATE sluice_async_jobs SET status = 'in_progress', runner = 'replica-dead', \
             lease_until = ?1",
            [lease_until],
        )
        .unwrap();
    let id = query(&dir, "SELECT id FROM sluice_async_jobs")[0][0].clone();

    let started = tokio::time::Instant::now();
    let second = TestGateway::start(&toml).await;
    let done = answer(&second, &id, KEY).await;
    assert_eq!(done.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(upstream.calls(), 2);
    let metrics = second.metrics().await;
    assert!(
        metrics.contains("sluice_async_jobs_total{result=\"succeeded\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_stored_job_holds_no_credentials() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let gateway = TestGateway::start(&config(&dir, &upstream, "")).await;
    let response = post_async(
        &gateway,
        &[("api-key", KEY), ("x-sluice-priority", "batch")],
        &chat("gpt-4o"),
    )
    .await;
    let id = accepted(response).await;
    assert_eq!(answer(&gateway, &id, KEY).await.status(), 200);
    let rows = query(&dir, "SELECT * FROM sluice_async_jobs");
    assert_eq!(rows.len(), 1);
    let text = rows[0].join("\n").to_ascii_lowercase();
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains("authorization"), "{text}");
    assert!(!text.contains("api-key"), "{text}");
    assert!(text.contains("x-sluice-priority"), "{text}");
}

/// Every column of every row `sql` selects from the test's job store, as text.
fn query(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let connection = rusqlite::Connection::open(dir.join("jobs.sqlite")).unwrap();
    let mut statement = connection.prepare(sql).unwrap();
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            Ok((0..columns)
                .map(|index| match row.get_ref(index).unwrap() {
                    rusqlite::types::ValueRef::Text(text) => {
                        String::from_utf8_lossy(text).into_owned()
                    }
                    rusqlite::types::ValueRef::Integer(value) => value.to_string(),
                    _ => String::new(),
                })
                .collect())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn a_fleet_on_postgresql_shares_its_jobs() {
    let database = common::postgres::TestDatabase::create(common::postgres::PLAIN).await;
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = config(&dir, &upstream, "").replace(
        &format!("sqlite:{}/jobs.sqlite", dir.display()),
        &database.url(),
    );
    let (one, two) = (
        TestGateway::start(&toml).await,
        TestGateway::start(&toml).await,
    );
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(accepted(post_async(&one, &[], &chat("gpt-4o")).await).await);
    }
    // Either replica answers any job, and each job ran once.
    for id in &ids {
        let done = answer(&two, id, KEY).await;
        assert_eq!(done.status(), 200);
        assert_eq!(done.headers()["x-sluice-async-id"], id.as_str());
    }
    assert_eq!(upstream.calls(), ids.len());
    drop((one, two));
    database.drop_database().await;
}

#[tokio::test]
async fn a_key_with_its_backlog_full_gets_429_and_other_keys_do_not() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_secs(120)));
    let toml = config(&dir, &upstream, "max_queued_per_key = 2");
    let gateway = TestGateway::start(&toml).await;
    for _ in 0..2 {
        accepted(post_async(&gateway, &[], &chat("gpt-4o")).await).await;
    }
    let refused = post_async(&gateway, &[], &chat("gpt-4o")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let error = error_of(refused).await;
    assert_eq!(error["code"], "too_many_async_requests");
    // Another key's backlog is its own.
    let other = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(OTHER)
        .header("prefer", "respond-async")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    accepted(other).await;
}

/// Forces `gpt-4o`'s degradation level (`null` lifts the override).
async fn set_level(gateway: &TestGateway, level: Value) {
    let body = json!({ "level": level });
    let response = gateway
        .post("/admin/models/gpt-4o/level", Some(ADMIN), &body)
        .await;
    assert_eq!(response.status(), 200);
}

/// Degradation level 4 accepts a `queue_in_maintenance` key's call as a job
/// that runs once the model is back; other keys get 503 `maintenance`.
#[tokio::test]
async fn maintenance_queues_a_willing_keys_call_until_the_model_is_back() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = format!(
        "[admin]\ntoken = \"{ADMIN}\"\n\
         [batch]\nstore = \"sqlite:{dir}/jobs.sqlite\"\nfiles_dir = \"{dir}/files\"\n\
         poll_interval = \"100ms\"\nlease = \"3s\"\n\
         [[keys]]\nname = \"app\"\nkey = \"{KEY}\"\nqueue_in_maintenance = true\n\
         [[keys]]\nname = \"other\"\nkey = \"{OTHER}\"\n{}",
        deployment("up", &upstream, ""),
        dir = dir.display(),
    );
    let gateway = TestGateway::start(&toml).await;
    set_level(&gateway, json!(4)).await;

    let refused = gateway
        .post("/v1/chat/completions", Some(OTHER), &chat("gpt-4o"))
        .await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_of(refused).await["code"], "maintenance");

    // No `Prefer` header: the key's setting makes it a job.
    let queued = gateway
        .post("/v1/chat/completions", Some(KEY), &chat("gpt-4o"))
        .await;
    // No preference was asked, so none is said to be applied.
    assert!(queued.headers().get("preference-applied").is_none());
    let id = accepted(queued).await;

    // It waits while the model is in maintenance.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let waiting = gateway
        .client
        .get(gateway.url(&format!("/v1/async/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), 202);
    assert_eq!(upstream.calls(), 0);

    set_level(&gateway, Value::Null).await;
    let done = answer(&gateway, &id, KEY).await;
    assert_eq!(done.status(), 200);
    let stored: Value = done.json().await.unwrap();
    assert_eq!(stored["object"], "chat.completion", "{stored}");
    assert_eq!(upstream.calls(), 1);
}

/// A job whose key is revoked before it runs is never sent upstream: it is
/// answered 401, and its callback says so.
#[tokio::test]
async fn a_job_whose_key_was_revoked_before_it_ran_is_answered_401() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let (hook, mut received) = callback_receiver(Duration::ZERO).await;
    let toml = format!(
        "[admin]\ntoken = \"{ADMIN}\"\nkeys_store = \"sqlite\"\n\
         [usage]\nstore = \"none\"\ndata_dir = \"{}\"\n{}",
        dir.display(),
        config(&dir, &upstream, "")
    );
    let gateway = TestGateway::start(&toml).await;
    // Maintenance holds the job until the key is gone.
    set_level(&gateway, json!(4)).await;
    let (key_id, secret) = gateway.create_key(ADMIN, "short-lived").await;
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .header("prefer", "respond-async")
        .header("x-sluice-callback", &hook)
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    let id = accepted(response).await;
    gateway.revoke_key(ADMIN, &key_id).await;
    set_level(&gateway, Value::Null).await;

    let (_, delivered) = tokio::time::timeout(Duration::from_secs(15), received.recv())
        .await
        .expect("the callback arrived")
        .unwrap();
    assert_eq!(delivered["id"], id.as_str());
    assert_eq!(delivered["response"]["status_code"], 401, "{delivered}");
    assert_eq!(
        delivered["response"]["body"]["error"]["code"],
        "invalid_api_key"
    );
    assert_eq!(upstream.calls(), 0);
}

/// A job naming a virtual model whose model is in maintenance waits for it
/// too (the pipeline's 503 `maintenance` is not kept as its answer), then
/// runs once the model is back.
#[tokio::test]
async fn a_job_for_a_virtual_name_waits_out_maintenance() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = format!(
        "[admin]\ntoken = \"{ADMIN}\"\n[[routes]]\nname = \"assistant\"\ndefault = \"gpt-4o\"\n{}",
        config(&dir, &upstream, "")
    );
    let gateway = TestGateway::start(&toml).await;
    set_level(&gateway, json!(4)).await;
    let id = accepted(post_async(&gateway, &[], &chat("assistant")).await).await;
    // The runner has taken the job (twice: it was put back once) and left it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let attempts = || -> u32 {
        query(&dir, "SELECT attempts FROM sluice_async_jobs")[0][0]
            .parse()
            .unwrap()
    };
    while attempts() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner never took the job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = gateway
        .client
        .get(gateway.url(&format!("/v1/async/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), 202, "the job was answered in maintenance");
    assert_eq!(upstream.calls(), 0);
    set_level(&gateway, Value::Null).await;
    let done = answer(&gateway, &id, KEY).await;
    assert_eq!(done.status(), 200);
    assert_eq!(upstream.calls(), 1);
}

/// The operator lists every key's jobs and cancels one mid-run: its poller
/// gets the 409 `cancelled` answer and keeps it (the upstream's later
/// answer is not stored), and a second cancel is refused. Keys cannot reach these routes.
#[tokio::test]
async fn the_operator_lists_and_cancels_any_keys_job() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    let toml = format!("[admin]\ntoken = \"{ADMIN}\"\n") + &config(&dir, &upstream, "");
    let gateway = TestGateway::start(&toml).await;
    upstream.set_default(Behavior::DelayHead(Duration::from_secs(2)));
    let id = accepted(post_async(&gateway, &[], &chat("gpt-4o")).await).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = gateway.get_json("/admin/async", Some(ADMIN)).await;
        if listed["data"][0]["status"] == "in_progress" {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let job = &listed["data"][0];
    assert_eq!(job["id"], id.as_str(), "{listed}");
    assert_eq!(job["path"], "/v1/chat/completions");
    assert!(job["owner"].as_str().is_some_and(|owner| !owner.is_empty()));
    assert_eq!(listed["has_more"], false);

    for key in [KEY, "wrong-token"] {
        let refused = gateway.get_json("/admin/async", Some(key)).await;
        assert_eq!(
            refused["error"]["type"], "invalid_request_error",
            "{refused}"
        );
    }
    let cancel = format!("/admin/async/{id}/cancel");
    let cancelled = gateway.post(&cancel, Some(ADMIN), &json!({})).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "completed"
    );
    let polled = answer(&gateway, &id, KEY).await;
    assert_eq!(polled.status(), 409);
    assert_eq!(error_of(polled).await["code"], "cancelled");
    // The upstream's answer, had the call not been dropped, is not stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(answer(&gateway, &id, KEY).await.status(), 409);
    let again = gateway.post(&cancel, Some(ADMIN), &json!({})).await;
    assert_eq!(again.status(), 409);
    let unknown = gateway
        .post("/admin/async/async_nosuch/cancel", Some(ADMIN), &json!({}))
        .await;
    assert_eq!(unknown.status(), 404);
}

/// A job with a callback, cancelled mid-run: the callback gets the 409
/// `cancelled` answer once, and the call the runner held is dropped (its
/// lease token is not renewed by the claim that delivers the callback).
#[tokio::test]
async fn a_cancelled_jobs_callback_gets_the_cancel_once() {
    let dir = store_dir();
    let upstream = FakeUpstream::start("up").await;
    // The callback is slow to answer: the runner that delivers it holds
    // its claim that long, which must not keep the cancelled call alive.
    let (hook, mut received) = callback_receiver(Duration::from_secs(8)).await;
    let toml = format!("[admin]\ntoken = \"{ADMIN}\"\n") + &config(&dir, &upstream, "");
    let gateway = TestGateway::start(&toml).await;
    upstream.set_default(Behavior::Endless);
    // An endless answer: the job runs until something stops it.
    let response = post_async(&gateway, &[("x-sluice-callback", &hook)], &chat("gpt-4o")).await;
    let id = accepted(response).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.calls() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = format!("/admin/async/{id}/cancel");
    assert_eq!(
        gateway
            .post(&cancel, Some(ADMIN), &json!({}))
            .await
            .status(),
        200
    );
    let (_, delivered) = tokio::time::timeout(Duration::from_secs(15), received.recv())
        .await
        .expect("the callback arrived")
        .unwrap();
    assert_eq!(delivered["response"]["status_code"], 409, "{delivered}");
    assert_eq!(delivered["response"]["body"]["error"]["code"], "cancelled");
    // lease = 3 s in `config`: renewed every second, so dropped within 2 s,
    // while the callback is still being answered.
    assert!(upstream.wait_stream_dropped(Duration::from_secs(3)).await);
    let again = tokio::time::timeout(Duration::from_secs(6), received.recv()).await;
    assert!(again.is_err(), "the callback was delivered twice");
}
