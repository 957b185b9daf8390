//! Runtime keys through the running gateway, over real sockets: made,
//! changed and revoked with `/admin/keys` and in force at once on this
//! replica; kept across a restart (SQLite); followed by other replicas
//! sharing PostgreSQL (NOTIFY, and polling without it); limiter state that
//! follows a key's stable id through a rename.
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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestGateway;
use common::gateway::chat;
use common::postgres::{PLAIN, TestDatabase};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-runtime-keys-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway whose runtime keys live in `store` (SQLite in `data_dir` when
/// `"sqlite"`), polled every `poll`.
fn config(store: &str, data_dir: &std::path::Path, poll: &str) -> String {
    format!(
        r#"
        [usage]
        store = "none"
        data_dir = "{}"
        [admin]
        token = "{ADMIN}"
        keys_store = "{store}"
        keys_poll_interval = "{poll}"
        [auth]
        failed_auth_per_minute = 0
        [[keys]]
        name = "file-key"
        key = "sk-file-key-00000"
        [[deployments]]
        name = "mock"
        provider = "mock"
        models = ["gpt-4o"]
        mock = {{ latency = "1ms" }}
        "#,
        data_dir.display()
    )
}

async fn admin(
    gateway: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = gateway
        .client
        .request(method, gateway.url(path))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a key; its id and its secret (shown this once).
async fn create(gateway: &TestGateway, body: Value) -> (String, String) {
    let (status, created) = admin(gateway, reqwest::Method::POST, "/admin/keys", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

async fn patch(gateway: &TestGateway, id: &str, body: Value) -> Value {
    let path = format!("/admin/keys/{id}");
    let (status, key) = admin(gateway, reqwest::Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, 200, "{key}");
    key
}

async fn revoke(gateway: &TestGateway, id: &str) {
    let path = format!("/admin/keys/{id}");
    let (status, body) = admin(gateway, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
}

async fn status(gateway: &TestGateway, secret: &str) -> u16 {
    gateway
        .post("/v1/chat/completions", Some(secret), &chat("gpt-4o"))
        .await
        .status()
        .as_u16()
}

/// How long until `secret` gets `expected` on `gateway`, polled every
/// 20 ms; `None` past `within`.
async fn until_status(
    gateway: &TestGateway,
    secret: &str,
    expected: u16,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if status(gateway, secret).await == expected {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops a gateway and waits (bounded) until it has let go of its stores.
async fn stop(mut gateway: TestGateway) {
    gateway.shutdown();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the gateway stops within 15 s")
        .unwrap();
}

#[tokio::test]
async fn a_sqlite_key_works_at_once_follows_patches_and_revocation_and_survives_a_restart() {
    let dir = temp_dir();
    let gateway = TestGateway::start(&config("sqlite", &dir, "2s")).await;
    let (id, secret) = create(&gateway, json!({"name": "svc"})).await;
    assert!(secret.starts_with("sk-sluice-"));
    assert_eq!(status(&gateway, &secret).await, 200, "usable at once");
    let (_, listed) = admin(&gateway, reqwest::Method::GET, "/admin/keys", None).await;
    assert!(!listed.to_string().contains(&secret), "{listed}");
    let shown = gateway.get_json("/admin/config", Some(ADMIN)).await;
    assert_eq!(shown["runtime_keys"], 1);

    // A limit set by PATCH applies to the next calls.
    assert_eq!(patch(&gateway, &id, json!({"rpm": 2})).await["rpm"], 2);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status(&gateway, &secret).await);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // Revoked: refused at once.
    revoke(&gateway, &id).await;
    assert_eq!(status(&gateway, &secret).await, 401);
    assert_eq!(status(&gateway, "sk-file-key-00000").await, 200);

    // Another key outlives the gateway; the revoked one stays revoked.
    let (_, kept) = create(&gateway, json!({"name": "kept", "models": ["gpt-4o"]})).await;
    assert_eq!(status(&gateway, &kept).await, 200);
    stop(gateway).await;
    let restarted = TestGateway::start(&config("sqlite", &dir, "2s")).await;
    assert_eq!(
        status(&restarted, &kept).await,
        200,
        "kept across a restart"
    );
    assert_eq!(status(&restarted, &secret).await, 401);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn renaming_a_key_keeps_its_rpm_bucket() {
    let dir = temp_dir();
    let gateway = TestGateway::start(&config("sqlite", &dir, "2s")).await;
    let (id, secret) = create(&gateway, json!({"name": "before", "rpm": 3})).await;
    for _ in 0..2 {
        assert_eq!(status(&gateway, &secret).await, 200);
    }
    assert_eq!(
        patch(&gateway, &id, json!({"name": "after"})).await["name"],
        "after"
    );
    assert_eq!(status(&gateway, &secret).await, 200);
    assert_eq!(
        status(&gateway, &secret).await,
        429,
        "the bucket follows the id, not the name"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A runtime key's spent budget is refused naming the key as people call
/// it (its name), while the spend is kept under its stable id.
#[tokio::test]
async fn a_runtime_keys_spent_budget_is_named_by_the_key_name() {
    let dir = temp_dir();
    let gateway = TestGateway::start(&config("sqlite", &dir, "2s")).await;
    let body = json!({"name": "thrifty", "budget_daily_usd": 0.0000001});
    let (id, secret) = create(&gateway, body).await;
    assert_eq!(status(&gateway, &secret).await, 200);
    let refused = gateway
        .post("/v1/chat/completions", Some(&secret), &chat("gpt-4o"))
        .await;
    assert_eq!(refused.status(), 429);
    let error = common::gateway::error_of(refused).await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("key `thrifty`"), "{message}");
    assert!(!message.contains(&id), "{message}");
    let (_, budgets) = admin(&gateway, reqwest::Method::GET, "/admin/budgets", None).await;
    let row = &budgets["data"][0];
    assert_eq!(row["name"], "thrifty", "{budgets}");
    assert_eq!(row["id"], id.as_str());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two replicas on one fresh PostgreSQL database.
async fn replicas(poll: &str) -> (TestDatabase, TestGateway, TestGateway) {
    let database = TestDatabase::create(PLAIN).await;
    let (a, b) = (temp_dir(), temp_dir());
    let first = TestGateway::start(&config(&database.url(), &a, poll)).await;
    let second = TestGateway::start(&config(&database.url(), &b, poll)).await;
    (database, first, second)
}

#[tokio::test]
async fn a_postgres_key_reaches_the_other_replica_by_notify_and_so_does_its_revocation() {
    // Polling is slower than the whole test: what arrives, arrives by NOTIFY.
    let (database, first, second) = replicas("30s").await;
    let (id, secret) = create(&first, json!({"name": "shared"})).await;
    assert_eq!(status(&first, &secret).await, 200, "at once where made");
    let seen = until_status(&second, &secret, 200, Duration::from_secs(5)).await;
    assert!(seen.is_some(), "the other replica never took the key");
    assert!(seen.unwrap() < Duration::from_secs(3), "took {seen:?}");

    revoke(&first, &id).await;
    assert_eq!(status(&first, &secret).await, 401, "at once where revoked");
    let gone = until_status(&second, &secret, 401, Duration::from_secs(5)).await;
    assert!(
        gone.is_some(),
        "the other replica still takes a revoked key"
    );
    assert!(gone.unwrap() < Duration::from_secs(3), "took {gone:?}");
    drop((first, second));
    database.drop_database().await;
}

#[tokio::test]
async fn without_notify_both_replicas_follow_the_store_by_polling() {
    let (database, first, second) = replicas("300ms").await;
    let (id, secret) = create(&first, json!({"name": "polled"})).await;
    assert!(
        until_status(&second, &secret, 200, Duration::from_secs(5))
            .await
            .is_some()
    );

    // Revoked behind both replicas' backs: a write that bumps the version
    // but sends no notification, as through a pooler that drops them.
    let (client, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE sluice_keys SET revoked_at = 1, revision = revision + 1 WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    client
        .execute("UPDATE sluice_keys_version SET version = version + 1", &[])
        .await
        .unwrap();
    for gateway in [&first, &second] {
        let gone = until_status(gateway, &secret, 401, Duration::from_secs(5)).await;
        assert!(gone.is_some(), "a replica never saw the revocation");
        assert!(gone.unwrap() < Duration::from_secs(3), "took {gone:?}");
    }
    drop((first, second, client));
    database.drop_database().await;
}

async fn reload(gateway: &TestGateway) -> (u16, Value) {
    admin(gateway, reqwest::Method::POST, "/admin/reload", None).await
}

/// A file reload keeps the runtime keys merged in (and their buckets). A
/// file key taking a runtime key's name wins: the file is applied and that
/// runtime key alone is left out (not the set, and not the reload).
#[tokio::test]
async fn runtime_keys_outlive_file_reloads_and_a_clashing_file_key_wins() {
    let dir = temp_dir();
    let path = dir.join("sluice.toml");
    let file = config("sqlite", &dir, "2s");
    std::fs::write(&path, &file).unwrap();
    let gateway = TestGateway::start_file(&path).await;
    let (_, secret) = create(&gateway, json!({"name": "runtime", "rpm": 2})).await;
    assert_eq!(status(&gateway, &secret).await, 200);

    let added =
        format!("{file}\n[[keys]]\nname = \"second-file-key\"\nkey = \"sk-second-file-0\"\n");
    std::fs::write(&path, &added).unwrap();
    let (code, answer) = reload(&gateway).await;
    assert_eq!((code, &answer["changed"]), (200, &json!(true)), "{answer}");
    assert_eq!(status(&gateway, "sk-second-file-0").await, 200);
    assert_eq!(status(&gateway, &secret).await, 200, "still in force");
    assert_eq!(status(&gateway, &secret).await, 429, "its bucket was kept");

    let (_, other) = create(&gateway, json!({"name": "other-runtime"})).await;
    let clash = format!("{added}\n[[keys]]\nname = \"runtime\"\nkey = \"sk-clashing-key0\"\n");
    std::fs::write(&path, &clash).unwrap();
    let (code, answer) = reload(&gateway).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        status(&gateway, "sk-clashing-key0").await,
        200,
        "the file's key"
    );
    assert_eq!(
        status(&gateway, &secret).await,
        401,
        "the clashing runtime key is out"
    );
    assert_eq!(
        status(&gateway, &other).await,
        200,
        "the rest of the set stays"
    );
    assert_eq!(status(&gateway, "sk-second-file-0").await, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Concurrent admin writes: whatever order their applications run in, the
/// set in force at the end is the store's (no revoked key comes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_and_revocations_leave_no_revoked_key_in_force() {
    let dir = temp_dir();
    let gateway = std::sync::Arc::new(TestGateway::start(&config("sqlite", &dir, "1h")).await);
    let tasks: Vec<_> = (0..24)
        .map(|n| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let (id, secret) = create(&gateway, json!({"name": format!("churn-{n}")})).await;
                if n % 2 == 0 {
                    revoke(&gateway, &id).await;
                }
                (n, secret)
            })
        })
        .collect();
    for task in tasks {
        let (n, secret) = task.await.unwrap();
        let expected = if n % 2 == 0 { 401 } else { 200 };
        assert_eq!(status(&gateway, &secret).await, expected, "churn-{n}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
