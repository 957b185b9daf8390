//! Batch API benchmark: `cargo bench --bench batch`.
//!
//! The real `sluice` binary (the release build `cargo bench` makes, or
//! `SLUICE_BIN`) runs as its own process, so its memory can be read from
//! `/proc/<pid>/status`, in front of a fake upstream with a quota: every
//! answer takes 20 ms and at most 16 requests may be in flight, more get a
//! 429 with `retry-after-ms: 20`. The quota is thus 16 / 20 ms = 800
//! requests/s. Sluice runs a 5,000-line then a 50,000-line chat batch from
//! upload to `completed` (SQLite job store, usage ledger on). Printed per
//! batch: time to complete, lines/s, the ratio of lines/s to the quota,
//! the upstream's 429s, and the gateway's RSS sampled every 200 ms (peak,
//! and one sample a second). A realtime chat call is made every 100 ms
//! while each batch runs: its median latency against the idle median (30
//! calls before the first batch) shows what the batch costs interactive
//! traffic sharing the quota. The small batch then runs twice more on a
//! fresh gateway: with the quota declared (`max_concurrency = 16`), and
//! hidden but learned by `concurrency = "adaptive"` on the deployment.
//!
//! Knobs (env): BENCH_BATCH_LINES (default 50000), BENCH_BATCH_SMALL_LINES
//! (5000), BENCH_QUOTA_SLOTS (16), BENCH_QUOTA_LATENCY_MS (20).
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a bench prints its report and stops at a broken setup"
)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/process.rs"]
mod process;
#[path = "common/quota.rs"]
mod quota;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{KEY, env_or};
use process::{SluiceProcess, TempDir, free_port};
use quota::Quota;

/// RSS sampling period.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How often a realtime call is made while a batch runs.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Longest one batch may take before the bench gives up.
const BATCH_DEADLINE: Duration = Duration::from_secs(150);

/// `deployment_extra` goes into the deployment's section (e.g. its
/// `max_concurrency`).
async fn start_sluice(upstream: std::net::SocketAddr, deployment_extra: &str) -> SluiceProcess {
    let dir = TempDir::new("sluice-batch-bench");
    let port = free_port();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
[log]
level = "warn"
[usage]
data_dir = "{}"
[batch]
poll_interval = "100ms"
[[deployments]]
name = "quota"
provider = "openai"
base_url = "http://{upstream}/v1"
api_key = "upstream-key"
{deployment_extra}
models = ["gpt-4o"]
[[keys]]
name = "bench"
key = "{KEY}"
"#,
        dir.0.display()
    );
    let process = SluiceProcess::start(&dir.0, "bench", port, &config).await;
    process.owning(dir)
}

/// One unlabelled gauge's value from the gateway's `/metrics`.
async fn gauge(client: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The gateway's resident set, in MiB, from `/proc/<pid>/status`.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `lines` chat requests; a few system prompts, so prefix grouping has
/// something to group.
fn input(lines: usize) -> Vec<u8> {
    let mut text = String::with_capacity(lines * 200);
    for n in 0..lines {
        let line = serde_json::json!({
            "custom_id": format!("req-{n}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o", "max_tokens": 16, "messages": [
                {"role": "system", "content": format!("You are assistant number {}.", n % 8)},
                {"role": "user", "content": format!("Summarise item {n} in one line.")},
            ]},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text.into_bytes()
}

async fn call(request: reqwest::RequestBuilder) -> Value {
    let response = request.bearer_auth(KEY).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// What one batch run measured.
struct Run {
    elapsed: Duration,
    running: Duration,
    samples: Vec<f64>,
    output_lines: usize,
    throttled: u64,
    /// The upstream's calls in flight, sampled with the RSS.
    busy: Vec<usize>,
    /// The runner's adaptive limit (`sluice_batch_line_limit`), sampled too.
    limits: Vec<f64>,
    /// Latencies of realtime calls made while the batch ran; `None` for
    /// one that got an error (the upstream's 429 after the gateway's retries).
    realtime: Vec<Option<Duration>>,
}

/// Sends a realtime chat call every `PROBE_EVERY` until aborted, timing each.
type Probes = Arc<std::sync::Mutex<Vec<Option<Duration>>>>;

fn probe_realtime(url: String) -> (tokio::task::JoinHandle<()>, Probes) {
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = latencies.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let latency = realtime_call(&client, &url).await;
            sink.lock().unwrap().push(latency);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
    (task, latencies)
}

async fn realtime_call(client: &reqwest::Client, url: &str) -> Option<Duration> {
    let started = Instant::now();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-sluice-priority", "realtime")
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let ok = response.status().is_success();
    response.bytes().await.unwrap();
    ok.then(|| started.elapsed())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Uploads `lines` requests, runs them as a batch until `completed` while
/// sampling the gateway's RSS, and checks the output has every line.
async fn run_batch(sluice: &SluiceProcess, quota: &Arc<Quota>, lines: usize) -> Run {
    let client = reqwest::Client::new();
    let file_id = sluice.upload_batch_file(KEY, input(lines)).await;
    let pid = sluice.child.id();
    let sampling = Arc::new(std::sync::Mutex::new(Vec::new()));
    let busy = Arc::new(std::sync::Mutex::new(Vec::new()));
    let limits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let sampling = sampling.clone();
        let busy = busy.clone();
        let limits = limits.clone();
        let quota = quota.clone();
        let metrics = format!("{}/metrics", sluice.url);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                if let Some(rss) = rss_mib(pid) {
                    sampling.lock().unwrap().push(rss);
                }
                let upstream = quota.in_flight.load(Ordering::Relaxed);
                busy.lock().unwrap().push(upstream);
                if let Some(limit) = gauge(&client, &metrics, "sluice_batch_line_limit").await {
                    limits.lock().unwrap().push(limit);
                }
            }
        })
    };
    let throttled_before = quota.throttled.load(Ordering::Relaxed);
    let (prober, realtime) = probe_realtime(sluice.url.clone());
    let started = Instant::now();
    let batch = call(
        client
            .post(format!("{}/v1/batches", sluice.url))
            .json(&serde_json::json!({
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            })),
    )
    .await;
    let id = batch["id"].as_str().unwrap().to_owned();
    let done = loop {
        let batch = call(client.get(format!("{}/v1/batches/{id}", sluice.url))).await;
        match batch["status"].as_str().unwrap() {
            "completed" => break batch,
            "validating" | "in_progress" | "finalizing" => {}
            other => panic!("batch ended {other}: {batch}"),
        }
        assert!(
            started.elapsed() < BATCH_DEADLINE,
            "batch too slow: {batch}"
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    };
    let elapsed = started.elapsed();
    sampler.abort();
    prober.abort();
    let realtime = realtime.lock().unwrap().clone();
    let samples = sampling.lock().unwrap().clone();
    let seconds = |name: &str| done[name].as_i64().unwrap_or(0);
    let running =
        Duration::from_secs((seconds("finalizing_at") - seconds("in_progress_at")).max(0) as u64);
    assert_eq!(done["request_counts"]["completed"], lines, "{done}");
    let output = client
        .get(format!(
            "{}/v1/files/{}/content",
            sluice.url,
            done["output_file_id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let output_lines = output
        .split(|byte| *byte == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(output_lines, lines, "output lines");
    Run {
        elapsed,
        running,
        samples,
        output_lines,
        throttled: quota.throttled.load(Ordering::Relaxed) - throttled_before,
        realtime,
        busy: busy.lock().unwrap().clone(),
        limits: limits.lock().unwrap().clone(),
    }
}

fn report(label: &str, lines: usize, run: &Run, quota: &Quota, baseline: f64, idle: Duration) {
    let rate = lines as f64 / run.elapsed.as_secs_f64();
    let peak = run.samples.iter().copied().fold(0.0, f64::max);
    let per_second: Vec<String> = run
        .samples
        .iter()
        .step_by((Duration::from_secs(1).as_millis() / SAMPLE_EVERY.as_millis()) as usize)
        .map(|rss| format!("{rss:.0}"))
        .collect();
    println!("{label}: {lines} lines");
    println!(
        "  time to complete {:.1} s (in_progress → finalizing ≈ {} s), {} output lines",
        run.elapsed.as_secs_f64(),
        run.running.as_secs(),
        run.output_lines
    );
    println!(
        "  {rate:.0} lines/s = {:.0}% of the upstream quota ({:.0} req/s); upstream 429s: {}",
        100.0 * rate / quota.per_second(),
        quota.per_second(),
        run.throttled
    );
    println!(
        "  gateway RSS: idle {baseline:.0} MiB, peak {peak:.0} MiB ({} samples every {} ms)",
        run.samples.len(),
        SAMPLE_EVERY.as_millis()
    );
    println!("  RSS each second (MiB): {}", per_second.join(" "));
    let busy = run.busy.iter().sum::<usize>() as f64 / run.busy.len().max(1) as f64;
    let limit = run.limits.iter().sum::<f64>() / run.limits.len().max(1) as f64;
    println!(
        "  upstream calls in flight: mean {busy:.1} of {} slots; the runner's limit: mean {limit:.1}",
        quota.slots
    );
    let mut realtime: Vec<Duration> = run.realtime.iter().flatten().copied().collect();
    let during = median(&mut realtime);
    println!(
        "  realtime calls during the batch: {} calls, {} errors, median {:.1} ms = {:.2}x the idle median ({:.1} ms)",
        run.realtime.len(),
        run.realtime.len() - realtime.len(),
        during.as_secs_f64() * 1e3,
        during.as_secs_f64() / idle.as_secs_f64().max(1e-9),
        idle.as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let big = env_or("BENCH_BATCH_LINES", 50_000usize).max(1);
    let small = env_or("BENCH_BATCH_SMALL_LINES", 5_000usize).max(1);
    let quota = Quota::new(
        env_or("BENCH_QUOTA_SLOTS", 16usize).max(1),
        Duration::from_millis(env_or("BENCH_QUOTA_LATENCY_MS", 20u64).max(1)),
    );
    let upstream = quota.serve().await;
    let sluice = start_sluice(upstream, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_mib(sluice.child.id()).unwrap_or(0.0);
    println!(
        "batch bench: sluice as its own process, upstream quota {} in flight × {} ms = {:.0} req/s, [batch] max_concurrency 64 (default)",
        quota.slots,
        quota.latency.as_millis(),
        quota.per_second()
    );
    let client = reqwest::Client::new();
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.extend(realtime_call(&client, &sluice.url).await);
    }
    let idle = median(&mut idle);
    let run = run_batch(&sluice, &quota, small).await;
    report("small batch", small, &run, &quota, baseline, idle);
    let run = run_batch(&sluice, &quota, big).await;
    report("large batch", big, &run, &quota, baseline, idle);
    println!(
        "upstream answered {} requests, 429 to {}",
        quota.answered.load(Ordering::Relaxed),
        quota.throttled.load(Ordering::Relaxed)
    );
    drop(sluice);
    // The same quota declared on the deployment: the gateway queues calls
    // past it (realtime first) instead of learning it from 429s.
    let declared = format!("max_concurrency = {}", quota.slots);
    let label = format!("with the quota declared ({declared} on the deployment)");
    run_configured(upstream, &quota, &declared, &label, small, idle).await;
    // The quota hidden again, but learned by the deployment's adaptive
    // limit (issue 16) rather than by the batch runner alone.
    let adaptive = "concurrency = \"adaptive\"\nmax_concurrency = 64";
    let label = "with the quota hidden and concurrency = \"adaptive\" (max 64) on the deployment";
    run_configured(upstream, &quota, adaptive, label, small, idle).await;
}

/// Runs the small batch on a gateway whose deployment has `extra` in its
/// section, and reports it under `label`.
async fn run_configured(
    upstream: std::net::SocketAddr,
    quota: &Arc<Quota>,
    extra: &str,
    label: &str,
    lines: usize,
    idle: Duration,
) {
    let sluice = start_sluice(upstream, extra).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_mib(sluice.child.id()).unwrap_or(0.0);
    println!("{label}:");
    let run = run_batch(&sluice, quota, lines).await;
    report("small batch", lines, &run, quota, baseline, idle);
}
