//! A fleet as it is deployed: three replicas of the binary behind nginx
//! (round robin, keep-alive to the replicas, as an operator configures it)
//! sharing one Redis and one PostgreSQL, under steady load. A small endpoint
//! controller follows each replica's `/readyz` and takes a replica that is
//! not ready out of nginx's upstream list (a reload), as an ingress
//! controller follows a Kubernetes Service's endpoints. On SIGTERM a
//! replica turns `/readyz` false and keeps serving for `drain_delay`
//! (answers carry `connection: close`), so it is out of rotation before its
//! listener closes; then it serves what its backlog holds and finishes what
//! is in flight. The clients open a connection per request, as nginx closes
//! idle client connections when it reloads.
//!
//! Checked in one run, phase by phase, with the load running throughout:
//! limits exact across the fleet; a key made through one replica's admin
//! API working on every replica within a second; a rolling restart (SIGTERM,
//! drain, start, one replica at a time) with zero client errors; a replica
//! killed with `kill -9` and restarted, the ledger then holding every
//! answered request once; a batch whose runner is killed with `kill -9`
//! completing on another replica with every `custom_id` once.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::postgres::{self, TestDatabase};
use common::process::{SluiceProcess, TempDir, free_port, stop_with_workers};
use common::redis::RedisServer;
use common::{Behavior, FakeUpstream};
use serde_json::{Value, json};

const LOAD_KEY: &str = "sk-load-0000000000";
const LIMITED_KEY: &str = "sk-limited-000000";
const ADMIN_TOKEN: &str = "fleet-admin-token-000";
/// The limited key's requests per minute, shared by the fleet.
const LIMITED_RPM: usize = 30;
const BATCH_LINES: usize = 200;
const REPLICAS: usize = 3;
/// Clients sending back to back through nginx the whole time.
const CLIENTS: usize = 6;
/// How long nginx rests a replica that refused a connection (its
/// `fail_timeout`; the default is 10 s). A rolling restart waits this long
/// after a replica is back, until nginx sends to it again, before the next
/// one goes: with all of them resting, nginx has no live upstream.
const NGINX_FAIL_TIMEOUT: u64 = 3;

/// One replica: its ports, data directory and config.
struct Replica {
    name: String,
    port: u16,
    admin_port: u16,
    dir: PathBuf,
    config: String,
    process: Option<SluiceProcess>,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let process = SluiceProcess::start(&self.dir, &self.name, self.port, &self.config).await;
        self.process = Some(process);
    }

    fn log(&self) -> String {
        self.process
            .as_ref()
            .map(SluiceProcess::log_text)
            .unwrap_or_default()
    }
}

fn config(
    port: u16,
    admin_port: u16,
    dir: &Path,
    shared: &Path,
    (redis, database): (&str, &str),
    (fast, slow): (&FakeUpstream, &FakeUpstream),
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
shutdown_grace = "10s"
drain_delay = "1s"
[log]
format = "json"
[auth]
required = true
[admin]
listen = "127.0.0.1:{admin_port}"
token = "{ADMIN_TOKEN}"
keys_store = "{database}"
keys_poll_interval = "500ms"
[redis]
url = "{redis}"
[usage]
store = "{database}"
data_dir = "{data}"
flush_interval = "200ms"
[batch]
store = "{database}"
files_dir = "{files}"
lease = "3s"
poll_interval = "100ms"
max_concurrency = 8
[[deployments]]
name = "fast"
provider = "openai"
base_url = "{fast}"
models = ["gpt-4o"]
[[deployments]]
name = "slow"
provider = "openai"
base_url = "{slow}"
models = ["gpt-4o-batch"]
[[keys]]
name = "load"
key = "{LOAD_KEY}"
[[keys]]
name = "limited"
key = "{LIMITED_KEY}"
rpm = {LIMITED_RPM}
"#,
        data = dir.display(),
        files = shared.display(),
        fast = fast.base_url(),
        slow = slow.base_url(),
    )
}

/// nginx in front of the replicas, its upstream list rewritten on demand.
struct Nginx {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, replicas: &[u16]) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("nginx must be installed (scripts/ensure-deps.sh installs it)");
        let dir = dir.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let root = dir.display();
        // As an operator proxies an SSE API: HTTP/1.1 keep-alive to the
        // replicas, no buffering, long reads; retries only where nginx
        // knows the request was not sent (its default `error timeout`).
        let config = format!(
            "daemon off;\nworker_processes 2;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
             fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
             client_max_body_size 64m;\n\
             upstream sluice {{\n    include {root}/upstreams.conf;\n    keepalive 64;\n  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://sluice;\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
             proxy_buffering off;\n      proxy_request_buffering off;\n      proxy_read_timeout 600s;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let all_up: Vec<(u16, bool)> = replicas.iter().map(|port| (*port, true)).collect();
        write_upstreams(&dir, &all_up);
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The upstream list: a replica that is not ready is `down`.
fn write_upstreams(dir: &Path, replicas: &[(u16, bool)]) {
    let lines: String = replicas
        .iter()
        .map(|(port, ready)| {
            let down = if *ready { "" } else { " down" };
            format!("server 127.0.0.1:{port} fail_timeout={NGINX_FAIL_TIMEOUT}s{down};\n")
        })
        .collect();
    std::fs::write(dir.join("upstreams.conf"), lines).unwrap();
}

/// The endpoint controller: every 100 ms, each replica's `/readyz`; when
/// that changes, nginx's upstream list follows (a graceful reload).
async fn follow_readiness(nginx: Arc<Nginx>, ports: Vec<u16>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut last: Vec<bool> = vec![true; ports.len()];
    while !stop.load(Ordering::Relaxed) {
        let mut now = Vec::with_capacity(ports.len());
        for port in &ports {
            let ready = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            now.push(ready);
        }
        if now != last && now.iter().any(|ready| *ready) {
            let list: Vec<(u16, bool)> = ports.iter().copied().zip(now.iter().copied()).collect();
            let reloading = nginx.clone();
            tokio::task::spawn_blocking(move || reloading.set_upstreams(&list))
                .await
                .unwrap();
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Nginx {
    /// Writes the upstream list and reloads nginx (SIGHUP).
    fn set_upstreams(&self, replicas: &[(u16, bool)]) {
        write_upstreams(&self.dir, replicas);
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn error_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        // Refused connections are retried elsewhere: the other lines say why
        // a request failed.
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| {
                !line.contains("connect() failed (111") && !line.contains("temporarily disabled")
            })
            .collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop_with_workers(&mut self.child);
    }
}

/// What the steady load saw.
#[derive(Default)]
struct Load {
    /// Request ids answered 200 (non-streamed and complete streams), with
    /// when the answer's last byte arrived.
    answered: Mutex<BTreeMap<String, Instant>>,
    /// When replicas were killed with `kill -9`.
    kills: Mutex<Vec<Instant>>,
    /// Failures by phase: (phase, what happened).
    errors: Mutex<Vec<(String, String)>>,
    sent: AtomicUsize,
    phase: Mutex<String>,
}

impl Load {
    fn error(&self, what: String) {
        let phase = self.phase.lock().unwrap().clone();
        self.errors.lock().unwrap().push((phase, what));
    }

    fn errors_in(&self, phase: &str) -> Vec<String> {
        let errors = self.errors.lock().unwrap();
        errors
            .iter()
            .filter(|(p, _)| p == phase)
            .map(|(_, what)| what.clone())
            .collect()
    }

    fn set_phase(&self, phase: &str) {
        *self.phase.lock().unwrap() = phase.to_owned();
    }
}

/// One client: chat requests back to back, every fourth one streamed.
async fn client_loop(
    url: String,
    client: reqwest::Client,
    load: Arc<Load>,
    id: usize,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request_id = format!("fleet-{id}-{n}");
        let stream = n % 4 == 0;
        let body = json!({
            "model": "gpt-4o",
            "stream": stream,
            "messages": [{"role": "user", "content": format!("question {id} {n}")}],
        });
        load.sent.fetch_add(1, Ordering::Relaxed);
        let sent = client
            .post(&url)
            .bearer_auth(LOAD_KEY)
            .header("x-request-id", &request_id)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                load.error(format!("{request_id}: {error}"));
                continue;
            }
        };
        let status = response.status();
        match response.bytes().await {
            Ok(bytes) if status == 200 && (!stream || bytes.ends_with(b"data: [DONE]\n\n")) => {
                load.answered
                    .lock()
                    .unwrap()
                    .insert(request_id, Instant::now());
            }
            Ok(bytes) => load.error(format!(
                "{request_id}: {status} {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )),
            Err(error) => load.error(format!("{request_id}: {status} body: {error}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_behind_nginx_keeps_its_promises() {
    let dir = TempDir::new("sluice-fleet");
    let redis = RedisServer::start().await;
    let database = TestDatabase::create(postgres::PLAIN).await;
    let fast = FakeUpstream::start("fast").await;
    fast.set_default(Behavior::Paced(Duration::from_millis(15)));
    let slow = FakeUpstream::start("slow").await;
    slow.set_default(Behavior::DelayHead(Duration::from_millis(150)));
    let shared = dir.join("shared-files");

    let mut replicas: Vec<Replica> = (0..REPLICAS)
        .map(|n| {
            let (port, admin_port) = (free_port(), free_port());
            let data = dir.join(format!("replica-{n}"));
            std::fs::create_dir_all(&data).unwrap();
            Replica {
                name: format!("r{n}"),
                port,
                admin_port,
                config: config(
                    port,
                    admin_port,
                    &data,
                    &shared,
                    (&redis.url(), &database.url()),
                    (&fast, &slow),
                ),
                dir: data,
                process: None,
            }
        })
        .collect();
    for replica in &mut replicas {
        replica.start().await;
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let nginx = Arc::new(Nginx::start(&dir, &ports));
    let stop_controller = Arc::new(AtomicBool::new(false));
    let controller = tokio::spawn(follow_readiness(
        nginx.clone(),
        ports.clone(),
        stop_controller.clone(),
    ));
    let client = reqwest::Client::new();

    // The steady load, through nginx, from here to the end.
    let load = Arc::new(Load::default());
    load.set_phase("warm-up");
    let stop_load = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                nginx.url("/v1/chat/completions"),
                // A connection per request: nginx closes idle client
                // connections when it reloads.
                reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap(),
                load.clone(),
                id,
                stop_load.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Limits: exact across the fleet.
    load.set_phase("limits");
    let limited = (0..LIMITED_RPM + 20).map(|n| {
        let client = client.clone();
        let url = nginx.url("/v1/chat/completions");
        async move {
            client
                .post(url)
                .bearer_auth(LIMITED_KEY)
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("limited {n}")}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let started = std::time::Instant::now();
    let statuses = futures_util::future::join_all(limited).await;
    // GCRA: the burst is the RPM, and one more call is let in per 60/RPM
    // seconds the burst itself lasts (2 s at 30; a loaded machine can
    // take that long to send 50 calls through nginx).
    let refilled = (started.elapsed().as_secs_f64() * LIMITED_RPM as f64 / 60.0) as usize;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, LIMITED_RPM + 20, "{statuses:?}");
    assert!(
        (LIMITED_RPM..=LIMITED_RPM + refilled).contains(&admitted),
        "an RPM of {LIMITED_RPM} over three replicas ({refilled} refilled): {statuses:?}"
    );

    // A key made on one replica works on every replica within a second.
    load.set_phase("runtime key");
    let created: Value = client
        .post(format!(
            "http://127.0.0.1:{}/admin/keys",
            replicas[0].admin_port
        ))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "made-at-runtime"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let made_at = Instant::now();
    let secret = created["key"].as_str().unwrap().to_owned();
    let mut reached = HashMap::new();
    while reached.len() < REPLICAS && made_at.elapsed() < Duration::from_secs(5) {
        for replica in &replicas {
            if reached.contains_key(&replica.name) {
                continue;
            }
            let status = client
                .get(format!("{}/v1/models", replica.url()))
                .bearer_auth(&secret)
                .send()
                .await
                .unwrap()
                .status();
            if status == 200 {
                reached.insert(replica.name.clone(), made_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let slowest = reached.values().max().copied().unwrap_or_default();
    assert_eq!(
        reached.len(),
        REPLICAS,
        "replicas that took the key: {reached:?}"
    );
    assert!(slowest < Duration::from_secs(1), "{reached:?}");

    // A rolling restart: zero client errors.
    load.set_phase("rolling restart");
    let restart_started = Instant::now();
    let mut drains = Vec::new();
    for replica in &mut replicas {
        let process = replica.process.take().unwrap();
        let signalled = Instant::now();
        let (status, log) = process.terminate().await;
        assert!(status.success(), "{log}");
        drains.push(signalled.elapsed());
        replica.start().await;
        wait_ready(&client, replica).await;
        // Back in nginx's rotation before the next one goes.
        tokio::time::sleep(Duration::from_millis(NGINX_FAIL_TIMEOUT * 1000 + 500)).await;
    }
    let rolling = restart_started.elapsed();
    let rolling_errors = load.errors_in("rolling restart");
    assert!(
        rolling_errors.is_empty(),
        "clients saw {} errors during the rolling restart, the first: {:?}\nnginx: {}",
        rolling_errors.len(),
        &rolling_errors[..rolling_errors.len().min(5)],
        nginx.error_log_tail()
    );

    // kill -9 one replica mid-load, then start it on the same data.
    load.set_phase("kill -9");
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicas[1].process.as_mut().unwrap().kill_9();
    load.kills.lock().unwrap().push(Instant::now());
    replicas[1].process = None;
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicas[1].start().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kill_errors = load.errors_in("kill -9");

    // A batch whose runner is killed with -9 completes elsewhere, each line once.
    load.set_phase("batch");
    let batch_id = start_batch(&client, &nginx).await;
    let runner = wait_for_runner(&replicas, &batch_id).await;
    wait_until(&client, &nginx, &batch_id, |batch| completed(batch) > 0).await;
    replicas[runner].process.as_mut().unwrap().kill_9();
    load.kills.lock().unwrap().push(Instant::now());
    replicas[runner].process = None;
    let done = wait_until(&client, &nginx, &batch_id, |batch| {
        batch["status"] == "completed"
    })
    .await;
    replicas[runner].start().await;
    assert_every_line_once(&client, &nginx, &done).await;
    let took_over = replicas
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != runner)
        .any(|(_, r)| r.log().contains("batch claimed"));
    assert!(took_over, "no other replica claimed the batch");

    // Stop the load, then every replica, and read the ledger.
    load.set_phase("stopping");
    stop_load.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    stop_controller.store(true, Ordering::Relaxed);
    controller.await.unwrap();
    for replica in &mut replicas {
        let (status, log) = replica.process.take().unwrap().terminate().await;
        assert!(status.success(), "{log}");
    }
    let answered = load.answered.lock().unwrap().clone();
    let stored = ledger_request_ids(&database.url()).await;
    // The journal takes a record within `[usage] journal_interval` (2 ms)
    // of its answer, once its thread gets a core: a request answered that
    // close before a `kill -9` may be lost, and only such a request.
    // Counted from when the client had the answer, which is after the
    // replica sent it; 100 ms allows for a starved journal thread and the
    // client's own delay on a loaded two-core machine.
    let kills = load.kills.lock().unwrap().clone();
    let just_before_a_kill = |at: &Instant| {
        kills
            .iter()
            .any(|kill| kill >= at && *kill - *at < Duration::from_millis(100))
    };
    let (in_window, unexplained): (Vec<_>, Vec<_>) = answered
        .iter()
        .filter(|(id, _)| !stored.contains(*id))
        .partition(|(_, at)| just_before_a_kill(at));
    let unexplained: Vec<&String> = unexplained.into_iter().map(|(id, _)| id).collect();
    assert!(
        unexplained.is_empty(),
        "{} of {} answered requests are not in the ledger, not answered just before a kill: {:?}",
        unexplained.len(),
        answered.len(),
        &unexplained[..unexplained.len().min(10)]
    );
    let rows = ledger_rows(&database.url()).await;
    eprintln!(
        "fleet: {} requests sent, {} answered, errors: rolling restart 0, kill -9 {}; ledger rows {rows} (every answered request present but {} answered within 100 ms of a kill); drain times {:?}; rolling restart of {REPLICAS} in {:.1}s; runtime key on every replica within {:?}; limit {admitted}/{} admitted",
        load.sent.load(Ordering::Relaxed),
        answered.len(),
        kill_errors.len(),
        in_window.len(),
        drains,
        rolling.as_secs_f64(),
        slowest,
        LIMITED_RPM + 20,
    );
    database.drop_database().await;
}

async fn wait_ready(client: &reqwest::Client, replica: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = client.get(format!("{}/readyz", replica.url())).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "{} not ready", replica.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn batch_input() -> Vec<u8> {
    let mut text = String::new();
    for n in 0..BATCH_LINES {
        let line = json!({
            "custom_id": format!("line-{n}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-batch", "messages": [{"role": "user", "content": format!("Say {n}")}]},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text.into_bytes()
}

async fn start_batch(client: &reqwest::Client, nginx: &Nginx) -> String {
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(batch_input()).file_name("input.jsonl"),
        );
    let file: Value = client
        .post(nginx.url("/v1/files"))
        .bearer_auth(LOAD_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch: Value = client
        .post(nginx.url("/v1/batches"))
        .bearer_auth(LOAD_KEY)
        .json(&json!({
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    batch["id"].as_str().unwrap().to_owned()
}

/// The replica whose log says it claimed `batch_id`.
async fn wait_for_runner(replicas: &[Replica], batch_id: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (n, replica) in replicas.iter().enumerate() {
            let claimed = replica
                .log()
                .lines()
                .any(|line| line.contains("batch claimed") && line.contains(batch_id));
            if claimed {
                return n;
            }
        }
        assert!(Instant::now() < deadline, "no replica claimed {batch_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn completed(batch: &Value) -> i64 {
    batch["request_counts"]["completed"].as_i64().unwrap_or(0)
}

#[allow(
    clippy::print_stderr,
    reason = "a poll that met an error page is shown in the test's output"
)]
async fn wait_until(
    client: &reqwest::Client,
    nginx: &Nginx,
    batch_id: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let response = client
            .get(nginx.url(&format!("/v1/batches/{batch_id}")))
            .bearer_auth(LOAD_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        // A poll right after a kill -9 may meet nginx's own error page
        // (every replica it tried failed at that moment): a poller tries
        // again. The load's client errors are counted and judged apart.
        match serde_json::from_str::<Value>(&text) {
            Ok(batch) if status.is_success() && until(&batch) => return batch,
            Ok(_) if status.is_success() => {}
            _ => eprintln!("batch poll answered {status}: {text}"),
        }
        assert!(Instant::now() < deadline, "batch stuck: {status} {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_every_line_once(client: &reqwest::Client, nginx: &Nginx, batch: &Value) {
    assert_eq!(batch["request_counts"]["completed"], BATCH_LINES, "{batch}");
    assert_eq!(batch["request_counts"]["failed"], 0, "{batch}");
    let output = client
        .get(nginx.url(&format!(
            "/v1/files/{}/content",
            batch["output_file_id"].as_str().unwrap()
        )))
        .bearer_auth(LOAD_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut ids: Vec<String> = output
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            line["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..BATCH_LINES).map(|n| format!("line-{n}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "every custom_id exactly once");
}

async fn ledger_request_ids(url: &str) -> BTreeSet<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query("SELECT request_id FROM sluice_usage", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

async fn ledger_rows(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one("SELECT COUNT(*) FROM sluice_usage", &[])
        .await
        .unwrap()
        .get(0)
}
