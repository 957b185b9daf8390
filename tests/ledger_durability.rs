//! The usage ledger's durability, against the real binary: a `kill -9`
//! loses no record of an answered request, a shutdown while the store is
//! down leaves the held records in the journal for the next start, and a
//! journal replayed over records the store already has adds no rows.
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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::FakeUpstream;
use common::gateway::{chat, deployment};
use common::postgres::{self, TestDatabase};
use common::process::{SluiceProcess, TempDir, free_port};
use futures_util::StreamExt;
use sluice::config::UsageConfig;
use sluice::engines::ledger::{Ledger, UsageRecord};
use sluice::infra::metrics::Metrics;

const ADMIN: &str = "admin-token-0123456789";
const KEY: &str = "sk-alpha-000000";

/// The real binary with `usage` as its `[usage]` section; `run` names its
/// config and log.
async fn start(dir: &Path, upstream: &FakeUpstream, usage: &str, run: u32) -> SluiceProcess {
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"2s\"\n[log]\nformat = \"json\"\n[usage]\n{usage}\n[admin]\ntoken = \"{ADMIN}\"\n{}[[keys]]\nname = \"alpha\"\nkey = \"{KEY}\"\n",
        deployment("oa", upstream, "")
    );
    SluiceProcess::start(dir, &run.to_string(), port, &config).await
}

/// `n` chat calls, 8 at a time; every one must be answered 200. Their
/// `x-request-id`s.
async fn traffic(sluice: &SluiceProcess, client: &reqwest::Client, n: usize) -> BTreeSet<String> {
    let url = format!("{}/v1/chat/completions", sluice.url);
    futures_util::stream::iter(0..n)
        .map(|_| async {
            let response = client
                .post(&url)
                .bearer_auth(KEY)
                .json(&chat("gpt-4o"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let id = response.headers()["x-request-id"].to_str().unwrap();
            let id = id.to_owned();
            response.bytes().await.unwrap();
            id
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The request ids in a SQLite ledger, and the number of rows.
fn sqlite_rows(dir: &Path) -> (BTreeSet<String>, usize) {
    let db = rusqlite::Connection::open(dir.join("usage.db")).unwrap();
    let mut query = db.prepare("SELECT request_id FROM sluice_usage").unwrap();
    let ids: Vec<String> = query
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let count = ids.len();
    (ids.into_iter().collect(), count)
}

#[tokio::test]
async fn every_answered_request_survives_kill_9_once() {
    let dir = TempDir::new("sluice-durability");
    let upstream = FakeUpstream::start("oa").await;
    // Nothing reaches the store before the kill: records live only in the
    // process and its journal.
    let usage = format!(
        "store = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"60s\"",
        dir.0.display()
    );
    let client = reqwest::Client::new();
    let first = start(&dir.0, &upstream, &usage, 1).await;
    let answered = traffic(&first, &client, 300).await;
    assert_eq!(answered.len(), 300);
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first); // SIGKILL
    assert_eq!(
        sqlite_rows(&dir.0).1,
        0,
        "nothing was written before the kill"
    );

    let second = start(&dir.0, &upstream, &usage, 2).await;
    let mut rows = (BTreeSet::new(), 0);
    for _ in 0..200 {
        rows = sqlite_rows(&dir.0);
        if rows.1 >= answered.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(rows.0, answered, "every answered request has a row");
    assert_eq!(rows.1, answered.len(), "and only one");

    // Killed again right after the replay was written, the journal may
    // still hold those records: a third start adds no rows.
    let more = traffic(&second, &client, 20).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(second);
    let _third = start(&dir.0, &upstream, &usage, 3).await;
    for _ in 0..200 {
        if sqlite_rows(&dir.0).1 >= 320 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ids, count) = sqlite_rows(&dir.0);
    assert_eq!(count, 320, "{} rows", count);
    assert!(more.is_subset(&ids));
}

/// A measurement, not a check: at about 100 requests/s (4 clients, 20-60
/// ms apart), `kill -9` at a moment unrelated to the traffic, restart, and
/// report every answered request without a row and how long before the kill
/// it was answered. `RUNS` runs (default 10); `SLUICE_BIN` for the release
/// binary:
/// `SLUICE_BIN=target/release/sluice cargo test --test ledger_durability -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn crash_window() {
    let upstream = FakeUpstream::start("oa").await;
    let runs: u64 = std::env::var("RUNS").map_or(10, |r| r.parse().unwrap());
    let (mut answered_total, mut missing) = (0, Vec::new());
    for run in 0..runs {
        let dir = TempDir::new("sluice-durability");
        let usage = format!("store = \"sqlite\"\ndata_dir = \"{}\"", dir.0.display());
        let mut sluice = start(&dir.0, &upstream, &usage, 1).await;
        let kill_at = Instant::now() + Duration::from_millis(1000 + run * 97);
        let url = format!("{}/v1/chat/completions", sluice.url);
        let answered = steady_load(url, kill_at).await;
        sluice.child.kill().unwrap();
        let killed = Instant::now();
        let answered: Vec<(String, Instant)> = answered
            .await
            .into_iter()
            .filter(|(_, at)| *at < killed)
            .collect();
        drop(sluice);
        let _restarted = start(&dir.0, &upstream, &usage, 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rows, _) = sqlite_rows(&dir.0);
        let last = answered.iter().map(|(_, at)| killed - *at).min();
        println!(
            "run {run}: {} answered, the last {last:?} before the kill",
            answered.len()
        );
        answered_total += answered.len();
        missing.extend(
            answered
                .iter()
                .filter(|(id, _)| !rows.contains(id))
                .map(|(_, at)| killed - *at),
        );
    }
    println!("answered {answered_total}; without a row: {missing:?} before the kill");
}

/// Four clients sending until a little after `until`; what was answered,
/// and when.
async fn steady_load(
    url: String,
    until: Instant,
) -> impl std::future::Future<Output = Vec<(String, Instant)>> {
    let client = reqwest::Client::new();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                while Instant::now() < until + Duration::from_millis(200) {
                    let request = client.post(&url).bearer_auth(KEY).json(&chat("gpt-4o"));
                    let Ok(response) = request.send().await else {
                        break;
                    };
                    let id = response.headers()["x-request-id"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    if response.bytes().await.is_ok() {
                        answered.push((id, Instant::now()));
                    }
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(20..60))).await;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep_until(until.into()).await;
    async move {
        let mut all = Vec::new();
        for client in clients {
            all.extend(client.await.unwrap());
        }
        all
    }
}

/// A PostgreSQL server of this test's own, which it can stop and start.
struct PrivatePostgres {
    dir: TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// initdb and start; as root, the server runs as `postgres` (it
    /// refuses root).
    fn start() -> Self {
        let dir = TempDir::new("sluice-durability");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:", &dir.0.display().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let bin = pg_bin();
        let data = dir.0.join("data").display().to_string();
        let initdb = as_postgres(&format!("{bin}/initdb"))
            .args(["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(initdb.success(), "initdb failed");
        let server = Self {
            dir,
            port: free_port(),
        };
        server.pg_ctl(&["start", "-w", "-t", "30"]);
        server
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.0.join("data").display().to_string();
        let log = self.dir.0.join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.0.display()
        );
        let status = as_postgres(&format!("{}/pg_ctl", pg_bin()))
            .args(["-D", &data, "-l", &log, "-o", &options])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
    }

    fn restart(&self) {
        self.pg_ctl(&["start", "-w", "-t", "30"]);
    }

    async fn rows(&self) -> (i64, i64) {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT COUNT(*), COUNT(DISTINCT record_id) FROM sluice_usage",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    async fn wait_for_rows(&self, n: i64) -> (i64, i64) {
        let mut rows = (0, 0);
        for _ in 0..200 {
            rows = self.rows().await;
            if rows.0 >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        rows
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.0.join("data").display().to_string();
        let _ = as_postgres(&format!("{}/pg_ctl", pg_bin()))
            .args(["-D", &data, "stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest installed PostgreSQL's binaries.
fn pg_bin() -> String {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL must be installed (scripts/ensure-deps.sh)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    format!("/usr/lib/postgresql/{}/bin", versions.last().unwrap())
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().unwrap();
    id.stdout.trim_ascii() == b"0"
}

/// `program` as the `postgres` user when root, as this user otherwise (as
/// `scripts/ensure-deps.sh` runs its server).
fn as_postgres(program: &str) -> Command {
    if !is_root() {
        return Command::new(program);
    }
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--", program]);
    command
}

async fn metric(client: &reqwest::Client, sluice: &SluiceProcess, name: &str) -> f64 {
    let text = client
        .get(format!("{}/metrics", sluice.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn a_shutdown_while_postgres_is_down_keeps_the_held_records_for_the_next_start() {
    let database = PrivatePostgres::start();
    let dir = TempDir::new("sluice-durability");
    let upstream = FakeUpstream::start("oa").await;
    let usage = format!(
        "store = \"{}\"\ndata_dir = \"{}\"\nflush_interval = \"100ms\"",
        database.url(),
        dir.0.display()
    );
    let client = reqwest::Client::new();
    let first = start(&dir.0, &upstream, &usage, 1).await;
    traffic(&first, &client, 20).await;
    assert_eq!(database.wait_for_rows(20).await, (20, 20));

    database.stop();
    traffic(&first, &client, 30).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The lag is the age of the oldest held record: it grows while nothing
    // is written.
    let lag = metric(&client, &first, "sluice_ledger_lag_seconds").await;
    assert!((1.0..30.0).contains(&lag), "lag {lag}");
    assert_eq!(metric(&client, &first, "sluice_ledger_pending").await, 30.0);
    let report = client
        .get(format!("{}/admin/usage", first.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 503);
    assert!(report.headers().contains_key("retry-after"));
    let body: serde_json::Value = report.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(body["error"]["code"], "usage_store_unavailable", "{body}");

    let (status, log) = first.terminate().await;
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("left in the journal") && log.contains("\"left\":30"),
        "{log}"
    );

    database.restart();
    let second = start(&dir.0, &upstream, &usage, 2).await;
    assert_eq!(database.wait_for_rows(50).await, (50, 50));
    let (status, log) = second.terminate().await;
    assert!(
        status.success() && log.contains("the journal is empty"),
        "{log}"
    );
    assert_eq!(database.rows().await, (50, 50));
}

fn record(n: usize) -> UsageRecord {
    UsageRecord {
        at_ms: 1_700_000_000_000 + n as i64,
        request_id: format!("req-{n}"),
        key: Arc::from("k"),
        model_requested: Arc::from("gpt-4o"),
        model: Arc::from("gpt-4o"),
        priority: "standard",
        cache: "-",
        status: 200,
        ..UsageRecord::default()
    }
}

/// Records committed, then their journal put back (as if the process died
/// between the commit and deleting the segment) and replayed: the store
/// has each once.
async fn replayed_records_are_not_written_twice(store: &str) {
    let dir = TempDir::new("sluice-durability");
    let config = UsageConfig {
        store: store.to_owned(),
        data_dir: dir.0.display().to_string(),
        flush_interval: Duration::from_secs(60),
        ..UsageConfig::default()
    };
    let ledger = Ledger::start(
        &config,
        Metrics::new().unwrap(),
        &sluice::util::tasks::Tasks::new(),
    )
    .unwrap()
    .unwrap();
    // The writer's first tick (at once, or once PostgreSQL is connected)
    // passes before the records come; the next is a minute away.
    ledger.store().prepare().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..50 {
        ledger.record(record(n));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let saved: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("usage.journal."))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert!(saved.iter().any(|(_, bytes)| !bytes.is_empty()));
    ledger.flush(Duration::from_secs(10)).await;
    for (path, bytes) in &saved {
        std::fs::write(path, bytes).unwrap();
    }

    let metrics = Metrics::new().unwrap();
    let again = Ledger::start(&config, metrics.clone(), &sluice::util::tasks::Tasks::new())
        .unwrap()
        .unwrap();
    again.record(record(50));
    again.flush(Duration::from_secs(10)).await;
    let totals = again.store().totals("key", 0, i64::MAX).await.unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].requests, 51, "each record once");
    assert_eq!(
        metrics.ledger_written.get(),
        1,
        "the replayed records already stored are not counted as written again"
    );
}

#[tokio::test]
async fn sqlite_replay_of_committed_records_adds_no_rows() {
    replayed_records_are_not_written_twice("sqlite").await;
}

#[tokio::test]
async fn postgres_replay_of_committed_records_adds_no_rows() {
    let database = TestDatabase::create(postgres::PLAIN).await;
    replayed_records_are_not_written_twice(&database.url()).await;
    database.drop_database().await;
}
