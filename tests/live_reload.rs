//! Hot reload over real sockets: a gateway started from a config file,
//! rewritten and reloaded (`POST /admin/reload`, the file watcher, SIGHUP
//! to the real binary) while calls run. Calls in flight finish on the
//! snapshot they started on; the next call sees the new one; an invalid
//! config changes nothing; live state (limiter levels, breakers) follows
//! stable names across snapshots.
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::gateway::{chat, deployment, error_of};
use common::{Behavior, FakeUpstream, TestGateway};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-0123456789";

/// A fresh directory holding `sluice.toml`.
fn config_file(toml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-live-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Replaces the file's content the way editors and ConfigMaps do: a new
/// file renamed over the old one, so no reader sees it half-written.
fn rewrite(path: &Path, toml: &str) {
    let next = path.with_extension("toml.next");
    std::fs::write(&next, toml).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// The settings every test shares: the admin API on, nothing written to
/// disk, no watcher unless asked (so each reload is the test's own), and no
/// failed-auth throttle (tests present removed keys on purpose).
fn base(watch: bool) -> String {
    format!(
        "[server]\nwatch_config = {watch}\n[usage]\nstore = \"none\"\n[batch]\nstore = \"none\"\n[admin]\ntoken = \"{ADMIN}\"\nkeys_store = \"none\"\n[auth]\nfailed_auth_per_minute = 0\n"
    )
}

fn key(name: &str, secret: &str, extra: &str) -> String {
    format!("[[keys]]\nname = \"{name}\"\nkey = \"{secret}\"\n{extra}\n")
}

async fn reload(gateway: &TestGateway) -> reqwest::Response {
    gateway
        .client
        .post(gateway.url("/admin/reload"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
}

async fn reload_ok(gateway: &TestGateway) -> Value {
    let response = reload(gateway).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn admin_config(gateway: &TestGateway) -> Value {
    gateway.get_json("/admin/config", Some(ADMIN)).await
}

async fn status(gateway: &TestGateway, secret: &str) -> u16 {
    gateway
        .post("/v1/chat/completions", Some(secret), &chat("gpt-4o"))
        .await
        .status()
        .as_u16()
}

/// The value of one metric series, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 50 ms until it holds or `within` is over.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reload `i` of the load test: `steady` always, `added-i` added and
/// `added-(i-1)` removed, the deployment's weight and quota changed, and a
/// second deployment from the fifth reload on.
fn churned(i: usize) -> String {
    let mut toml = base(false);
    toml.push_str(&key("steady", "sk-steady-000000", ""));
    toml.push_str(&key(&format!("added-{i}"), &format!("sk-added-{i:06}"), ""));
    let slow = "mock = { latency = \"1ms\", chunks = 40, chunk_interval = \"100ms\" }";
    toml.push_str(&format!(
        "[[deployments]]\nname = \"mock\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n{slow}\nweight = {}\nrpm = {}\n",
        i + 1,
        100_000 + i
    ));
    if i >= 5 {
        toml.push_str(&format!(
            "[[deployments]]\nname = \"mock-b\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n{slow}\n"
        ));
    }
    toml
}

/// One streamed call: the time its body ended, or why it failed. `open` is
/// told when its first chunk arrived.
async fn stream(
    gateway: &TestGateway,
    secret: &str,
    open: tokio::sync::oneshot::Sender<()>,
) -> Result<Instant, String> {
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut text = Vec::new();
    let mut chunks = response.bytes_stream();
    let mut open = Some(open);
    while let Some(chunk) = chunks.next().await {
        text.extend_from_slice(&chunk.map_err(|e| format!("body: {e}"))?);
        if let Some(open) = open.take() {
            let _ = open.send(());
        }
    }
    let text = String::from_utf8_lossy(&text);
    if !text.trim_end().ends_with("data: [DONE]") {
        return Err(format!("no [DONE]: {text}"));
    }
    Ok(Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_streams_outlive_ten_reloads_and_keys_follow_each_reload() {
    let path = config_file(&churned(0));
    let gateway = std::sync::Arc::new(TestGateway::start_file(&path).await);
    // Half the streams use a key the second reload removes: a call keeps
    // the snapshot it started on, so they still finish.
    let (streams, opened): (Vec<_>, Vec<_>) = (0..200)
        .map(|n| {
            let gateway = gateway.clone();
            let secret = if n % 2 == 0 {
                "sk-steady-000000"
            } else {
                "sk-added-000000"
            };
            let (open, opened) = tokio::sync::oneshot::channel();
            let stream = tokio::spawn(async move { stream(&gateway, secret, open).await });
            (stream, opened)
        })
        .unzip();
    // Every stream has sent its first chunk before the first reload.
    let all_open = futures_util::future::join_all(opened);
    tokio::time::timeout(Duration::from_secs(15), all_open)
        .await
        .expect("200 streams open within 15 s");
    for i in 1..=10 {
        rewrite(&path, &churned(i));
        let answer = reload_ok(&gateway).await;
        assert_eq!(answer["changed"], true, "{answer}");
        assert_eq!(
            status(&gateway, &format!("sk-added-{i:06}")).await,
            200,
            "key added by reload {i}"
        );
        assert_eq!(
            status(&gateway, &format!("sk-added-{:06}", i - 1)).await,
            401,
            "key removed by reload {i}"
        );
        assert_eq!(status(&gateway, "sk-steady-000000").await, 200);
    }
    let reloaded = Instant::now();
    let mut failures = Vec::new();
    let mut outlived = 0;
    for stream in streams {
        match stream.await.unwrap() {
            Ok(ended) if ended >= reloaded => outlived += 1,
            Ok(_) => {}
            Err(error) => failures.push(error),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..1]
    );
    assert_eq!(
        outlived, 200,
        "every stream was open across all ten reloads"
    );
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(&metrics, "sluice_config_reloads_total{result=\"ok\"}"),
        10.0
    );
    let deployments = gateway.get_json("/admin/deployments", Some(ADMIN)).await;
    let names: Vec<_> = deployments["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["mock", "mock-b"]);
    assert_eq!(deployments["data"][0]["weight"], 11);
}

fn plain(extra_keys: &str) -> String {
    let mut toml = base(false);
    toml.push_str(&key("alpha", "sk-alpha-000000", ""));
    toml.push_str(extra_keys);
    toml.push_str("[tiers.gold]\nrpm = 1000\n");
    toml.push_str(
        "[[deployments]]\nname = \"mock\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\nmock = { latency = \"1ms\" }\n",
    );
    toml
}

#[tokio::test]
async fn an_invalid_config_changes_nothing_and_says_where_it_is_wrong() {
    let path = config_file(&plain(""));
    let gateway = TestGateway::start_file(&path).await;
    let before = admin_config(&gateway).await;
    let cases = [
        ("[server\nlisten = 1".to_owned(), "sluice.toml"),
        (
            plain(&key("beta", "sk-beta-0000000", "tier = \"platinum\"")),
            "keys[1].tier",
        ),
        (
            plain("").replace(
                "provider = \"mock\"",
                "provider = \"openai\"\nbase_url = \"not a url\"",
            ),
            "deployments[0].base_url",
        ),
    ];
    for (toml, path_in_message) in &cases {
        rewrite(&path, toml);
        let response = reload(&gateway).await;
        assert_eq!(response.status(), 422);
        let error = error_of(response).await;
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(path_in_message), "{message}");
        assert!(message.contains("stays in force"), "{message}");
        assert_eq!(error["code"], "invalid_config");
        assert_eq!(status(&gateway, "sk-alpha-000000").await, 200);
        assert_eq!(status(&gateway, "sk-beta-0000000").await, 401);
        let after = admin_config(&gateway).await;
        assert_eq!(after["hash"], before["hash"]);
        assert_eq!(after["loaded_at"], before["loaded_at"]);
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(&metrics, "sluice_config_reloads_total{result=\"invalid\"}"),
        3.0
    );
    let info = format!(
        "sluice_config_info{{hash=\"{}\"}}",
        before["hash"].as_str().unwrap()
    );
    assert_eq!(metric(&metrics, &info), 1.0, "{metrics}");

    // The valid config again, then a fix: both go in force.
    rewrite(
        &path,
        &plain(&key("beta", "sk-beta-0000000", "tier = \"gold\"")),
    );
    let answer = reload_ok(&gateway).await;
    assert_eq!(answer["changed"], true);
    assert_eq!(status(&gateway, "sk-beta-0000000").await, 200);
}

#[tokio::test]
async fn an_unchanged_keys_rpm_bucket_keeps_its_level_across_a_reload() {
    let limited = key("limited", "sk-limited-00000", "rpm = 3");
    let path = config_file(&plain(&limited));
    let gateway = TestGateway::start_file(&path).await;
    for _ in 0..2 {
        assert_eq!(status(&gateway, "sk-limited-00000").await, 200);
    }
    // Another key changes; `limited` does not.
    let other = key("other", "sk-other-0000000", "");
    rewrite(&path, &plain(&format!("{limited}{other}")));
    assert_eq!(reload_ok(&gateway).await["changed"], true);
    assert_eq!(status(&gateway, "sk-other-0000000").await, 200);
    assert_eq!(status(&gateway, "sk-limited-00000").await, 200);
    assert_eq!(
        status(&gateway, "sk-limited-00000").await,
        429,
        "the fourth call in a minute, reload or not"
    );
}

fn breaker_config(upstream: &FakeUpstream, weight: u32) -> String {
    let mut toml = base(false);
    toml.push_str(&key("alpha", "sk-alpha-000000", ""));
    toml.push_str("[retry]\nmax_attempts = 1\n[circuit_breaker]\nfailure_threshold = 2\nrecovery_timeout = \"5m\"\n");
    toml.push_str(&deployment(
        "flaky",
        upstream,
        &format!("weight = {weight}"),
    ));
    toml
}

async fn circuit(gateway: &TestGateway) -> String {
    let deployments = gateway.get_json("/admin/deployments", Some(ADMIN)).await;
    deployments["data"][0]["circuit"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_open_breaker_stays_open_across_a_reload_that_changes_its_weight() {
    let upstream = FakeUpstream::start("flaky").await;
    upstream.set_default(Behavior::server_error());
    let path = config_file(&breaker_config(&upstream, 1));
    let gateway = TestGateway::start_file(&path).await;
    for _ in 0..2 {
        assert_ne!(status(&gateway, "sk-alpha-000000").await, 200);
    }
    assert_eq!(circuit(&gateway).await, "open");
    let calls = upstream.calls();

    rewrite(&path, &breaker_config(&upstream, 5));
    assert_eq!(reload_ok(&gateway).await["changed"], true);
    let deployments = gateway.get_json("/admin/deployments", Some(ADMIN)).await;
    assert_eq!(
        deployments["data"][0]["weight"], 5,
        "the reload took effect"
    );
    assert_eq!(circuit(&gateway).await, "open");
    assert_eq!(status(&gateway, "sk-alpha-000000").await, 503);
    assert_eq!(upstream.calls(), calls, "an open circuit sends nothing");
}

fn secrets_config(upstream: &FakeUpstream, team_key: &str) -> String {
    let mut toml = base(false);
    toml.push_str(&key("team", team_key, ""));
    toml.push_str("[alerts]\nwebhook_url = \"https://hooks:hunter2-pw@127.0.0.1:9/alerts\"\n");
    toml.push_str(&deployment(
        "oa",
        upstream,
        "api_key = \"sk-upstream-secret-1\"",
    ));
    toml
}

#[tokio::test]
async fn admin_config_redacts_secrets_and_its_hash_follows_changes() {
    let upstream = FakeUpstream::start("oa").await;
    let path = config_file(&secrets_config(&upstream, "sk-team-secret-1"));
    let gateway = TestGateway::start_file(&path).await;
    let anonymous = gateway
        .client
        .get(gateway.url("/admin/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let first = admin_config(&gateway).await;
    let text = first.to_string();
    for secret in [
        ADMIN,
        "sk-upstream-secret-1",
        "sk-team-secret-1",
        "hunter2-pw",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let config = &first["config"];
    assert_eq!(config["admin"]["token"], "[redacted]");
    assert_eq!(config["deployments"][0]["api_key"], "[redacted]");
    assert_eq!(config["keys"][0]["key"], "[redacted]");
    assert_eq!(
        config["alerts"]["webhook_url"], "https://127.0.0.1:9/[redacted]",
        "a webhook's path can be its secret: only the origin is shown"
    );
    assert_eq!(first["hash"].as_str().unwrap().len(), 64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let loaded_at = first["loaded_at"].as_u64().unwrap();
    assert!(
        loaded_at <= now && now - loaded_at < 60,
        "{loaded_at} vs {now}"
    );

    // Unchanged: same hash, nothing swapped.
    let same = reload_ok(&gateway).await;
    assert_eq!(same["changed"], false);
    assert_eq!(same["hash"], first["hash"]);

    // Only a secret changes: still a new hash, still redacted.
    rewrite(&path, &secrets_config(&upstream, "sk-team-secret-2"));
    let answer = reload_ok(&gateway).await;
    assert_eq!(answer["changed"], true);
    let second = admin_config(&gateway).await;
    assert_ne!(second["hash"], first["hash"]);
    assert_eq!(second["hash"], answer["hash"]);
    assert!(second["loaded_at"].as_u64().unwrap() >= loaded_at);
    assert!(!second.to_string().contains("sk-team-secret-2"));
    assert_eq!(status(&gateway, "sk-team-secret-2").await, 200);
    assert_eq!(status(&gateway, "sk-team-secret-1").await, 401);
}

fn watched(extra_keys: &str) -> String {
    let mut toml = base(true);
    toml.push_str(&key("alpha", "sk-alpha-000000", ""));
    toml.push_str(extra_keys);
    toml.push_str(
        "[[deployments]]\nname = \"mock\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\nmock = { latency = \"1ms\" }\n",
    );
    toml
}

async fn until_status(gateway: &TestGateway, secret: &str, expected: u16) -> bool {
    eventually(Duration::from_secs(5), || async {
        status(gateway, secret).await == expected
    })
    .await
}

#[tokio::test]
async fn the_watcher_reloads_an_edited_file_within_seconds() {
    let path = config_file(&watched(""));
    let gateway = TestGateway::start_file(&path).await;
    assert_eq!(status(&gateway, "sk-watched-00000").await, 401);

    // Edited in place (truncate and write), as `echo >>` or an editor does.
    std::fs::write(&path, watched(&key("watched", "sk-watched-00000", ""))).unwrap();
    assert!(
        until_status(&gateway, "sk-watched-00000", 200).await,
        "the edit was not picked up within 5 s"
    );

    // A broken save is refused, and the running config stays.
    std::fs::write(&path, "[server\n").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let metrics = gateway.metrics().await;
            metric(&metrics, "sluice_config_reloads_total{result=\"invalid\"}") >= 1.0
        })
        .await
    );
    assert_eq!(status(&gateway, "sk-watched-00000").await, 200);

    // Replaced by rename (an atomic save, a ConfigMap's swap).
    rewrite(&path, &watched(""));
    assert!(until_status(&gateway, "sk-watched-00000", 401).await);
}

/// The file was read at start-up; an edit made before the watcher's first
/// look at it is still reloaded.
#[tokio::test]
async fn an_edit_made_while_the_gateway_starts_is_not_missed() {
    let path = config_file(&watched(""));
    let gateway = TestGateway::start_file(&path).await;
    std::fs::write(&path, watched(&key("early", "sk-early-0000000", ""))).unwrap();
    assert!(
        until_status(&gateway, "sk-early-0000000", 200).await,
        "the early edit was never reloaded"
    );
}

/// The real binary, killed (SIGKILL) when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_reloads_on_sighup() {
    let port = free_port();
    let mut toml = base(false).replace(
        "[server]\n",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    toml.push_str(&key("alpha", "sk-alpha-000000", ""));
    toml.push_str(
        "[[deployments]]\nname = \"mock\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\nmock = { latency = \"1ms\" }\n",
    );
    let path = config_file(&toml);
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let call = |secret: &'static str| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .bearer_auth(secret)
                .json(&chat("gpt-4o"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            call("sk-alpha-000000").await == 200
        })
        .await,
        "the binary did not start serving"
    );
    rewrite(
        &path,
        &format!("{toml}{}", key("hup", "sk-hup-000000000", "")),
    );
    // No watcher: the edit alone changes nothing.
    assert_eq!(call("sk-hup-000000000").await, 401);
    let hup = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        eventually(Duration::from_secs(5), || async {
            call("sk-hup-000000000").await == 200
        })
        .await,
        "SIGHUP did not reload"
    );
    assert_eq!(call("sk-alpha-000000").await, 200, "still serving");
    drop(child);
}

/// The semantic cache's embedding calls run through the pipeline of the
/// snapshot in force, as calls of the key they serve: in its ledger rows
/// (tagged) and in the token and cost metrics.
#[tokio::test]
async fn semantic_cache_embeddings_are_metered_as_calls_of_the_calling_key() {
    let dir = std::env::temp_dir().join(format!("sluice-live-{}", fastrand::u64(..)));
    let toml = format!(
        r#"
        [usage]
        store = "sqlite"
        data_dir = "{}"
        flush_interval = "50ms"
        [admin]
        token = "{ADMIN}"
        keys_store = "none"
        [cache]
        enabled = true
        [cache.semantic]
        enabled = true
        threshold = 0.9
        embedding_model = "text-embedding-3-small"
        timeout = "5s"
        [[keys]]
        name = "caller"
        key = "sk-caller-000000"
        [[deployments]]
        name = "chat"
        provider = "mock"
        models = ["gpt-4o"]
        mock = {{ latency = "1ms" }}
        [[deployments]]
        name = "embedder"
        provider = "mock"
        models = ["text-embedding-3-small"]
        mock = {{ latency = "1ms" }}
        "#,
        dir.display()
    );
    let path = config_file(&toml);
    let gateway = TestGateway::start_file(&path).await;
    let question = json!({"model": "gpt-4o", "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let response = gateway
        .post("/v1/chat/completions", Some("sk-caller-000000"), &question)
        .await;
    assert_eq!(response.status(), 200);

    let tag = "sluice-internal:semantic-cache";
    assert!(
        eventually(Duration::from_secs(5), || async {
            let totals = gateway
                .get_json("/admin/usage?group_by=tag", Some(ADMIN))
                .await;
            totals["data"]
                .as_array()
                .is_some_and(|groups| groups.iter().any(|g| g["group"] == tag))
        })
        .await,
        "no ledger record tagged {tag}"
    );
    let db = rusqlite::Connection::open(dir.join("usage.db")).unwrap();
    let rows: Vec<(String, String, String, i64, f64, i64)> = db
        .prepare(
            "SELECT key, model, deployment, prompt_tokens, cost_usd, status FROM sluice_usage WHERE tag = ?1",
        )
        .unwrap()
        .query_map([tag], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!rows.is_empty());
    for (key, model, deployment, prompt_tokens, cost, status) in &rows {
        assert_eq!(key, "caller");
        assert_eq!(model, "text-embedding-3-small");
        assert_eq!(deployment, "embedder");
        assert_eq!(*status, 200);
        assert!(*prompt_tokens > 0 && *cost > 0.0, "{rows:?}");
    }
    let metrics = gateway.metrics().await;
    let tokens = "sluice_tokens_total{deployment=\"embedder\",model=\"text-embedding-3-small\",type=\"prompt\"}";
    assert!(metric(&metrics, tokens) > 0.0, "{metrics}");
    let cost = "sluice_cost_usd_total{model=\"text-embedding-3-small\"}";
    assert!(metric(&metrics, cost) > 0.0, "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin token rotates with a reload; settings a reload cannot change
/// are named in its answer and keep their running values.
#[tokio::test]
async fn a_reload_rotates_the_admin_token_and_names_restart_only_settings() {
    let path = config_file(&plain(""));
    let gateway = TestGateway::start_file(&path).await;
    let rotated = plain("")
        .replace(ADMIN, "rotated-admin-token-0001")
        .replace("failed_auth_per_minute = 0", "failed_auth_per_minute = 7");
    rewrite(&path, &rotated);
    let answer = reload_ok(&gateway).await;
    assert_eq!(answer["changed"], true);
    assert_eq!(
        answer["restart_required"],
        json!(["auth.failed_auth_per_minute"])
    );
    let with = |token: &'static str| {
        gateway
            .client
            .get(gateway.url("/admin/config"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(with(ADMIN).await.unwrap().status(), 401);
    assert_eq!(
        with("rotated-admin-token-0001").await.unwrap().status(),
        200
    );
}
