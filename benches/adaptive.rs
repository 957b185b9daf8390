//! Adaptive concurrency benchmark: `cargo bench --bench adaptive`.
//!
//! The real `sluice` binary (the release build `cargo bench` makes, or
//! `SLUICE_BIN`) runs as its own process in front of a fake upstream with a
//! hidden capacity: at most N = 16 calls in flight, 20 ms each, a 429 with
//! `retry-after-ms: 20` beyond, so N / 20 ms = 800 requests/s at most. 3N
//! client loops send chat calls for a warm-up then a measured window, in four
//! scenarios: the upstream directly (the reference), then a fresh gateway
//! with (a) no limit on the deployment, (b) a fixed limit of 3N
//! (`max_concurrency = 48`), (c) `concurrency = "adaptive"`. Printed per
//! scenario: answered requests/s, the clients' error share, the upstream's
//! 429 share, p50/p99 latency of answered requests, for (c) the mean learnt
//! limit (`sluice_deployment_concurrency_limit`, sampled every 200 ms); then
//! each one's throughput against the capacity, and adaptive against no limit.
//!
//! Knobs (env): BENCH_ADAPTIVE_SLOTS (16), BENCH_ADAPTIVE_LATENCY_MS (20),
//! BENCH_ADAPTIVE_CLIENTS (3 × slots), BENCH_ADAPTIVE_SECONDS (7, measured),
//! BENCH_ADAPTIVE_WARMUP_SECONDS (1).
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;

use common::{BODY, KEY, env_or};
use process::{SluiceProcess, TempDir, free_port};
use quota::Quota;

/// How often the learnt limit is read from `/metrics`.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Longest one client call may take before it counts as an error.
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// The deployment's name, as `/metrics` labels it.
const DEPLOYMENT: &str = "quota";

/// `deployment_extra` goes into the deployment's section (its concurrency
/// settings).
async fn start_sluice(upstream: SocketAddr, deployment_extra: &str) -> SluiceProcess {
    let dir = TempDir::new("sluice-adaptive-bench");
    let port = free_port();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
[log]
level = "warn"
[[deployments]]
name = "{DEPLOYMENT}"
provider = "openai"
base_url = "http://{upstream}/v1"
api_key = "upstream-key"
{deployment_extra}
models = ["gpt-4o"]
[[keys]]
name = "bench"
key = "{KEY}"
"#
    );
    let process = SluiceProcess::start(&dir.0, "bench", port, &config).await;
    process.owning(dir)
}

/// The deployment's learnt limit from the gateway's `/metrics`.
async fn learnt_limit(client: &reqwest::Client, base: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("sluice_deployment_concurrency_limit{{deployment=\"{DEPLOYMENT}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// One client call: its latency if answered with a success, `None` if not.
async fn call(client: &reqwest::Client, url: &str) -> Option<Duration> {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(BODY)
        .timeout(CALL_DEADLINE)
        .send()
        .await
        .ok()?;
    let ok = response.status().is_success();
    response.bytes().await.ok()?;
    ok.then(|| started.elapsed())
}

/// The load: how long, how many loops.
struct Load {
    clients: usize,
    warmup: Duration,
    window: Duration,
}

/// What one scenario measured over its window.
struct Outcome {
    /// Latencies of answered calls.
    answered: Vec<Duration>,
    errors: usize,
    /// The upstream's (answered, throttled) over the window.
    upstream: (u64, u64),
    /// Learnt-limit samples (empty without a gateway or adaptive mode).
    limits: Vec<f64>,
}

impl Outcome {
    fn rps(&self, load: &Load) -> f64 {
        self.answered.len() as f64 / load.window.as_secs_f64()
    }
}

/// `load.clients` loops call `url` back to back; calls finishing inside the
/// window count. With `metrics_base`, the learnt limit is sampled meanwhile.
async fn run(url: &str, metrics_base: Option<&str>, capacity: &Arc<Quota>, load: &Load) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.clients * 2)
        .build()
        .unwrap();
    let from = Instant::now() + load.warmup;
    let until = from + load.window;
    let counter = {
        let capacity = capacity.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let start = capacity.counts();
            tokio::time::sleep_until(until.into()).await;
            let end = capacity.counts();
            (end.0 - start.0, end.1 - start.1)
        })
    };
    let sampler = metrics_base.map(|base| {
        let (client, base) = (client.clone(), base.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            let mut limits = Vec::new();
            while Instant::now() < until {
                limits.extend(learnt_limit(&client, &base).await);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            limits
        })
    });
    let url: Arc<str> = url.into();
    let loops: Vec<_> = (0..load.clients)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let (mut answered, mut errors) = (Vec::new(), 0);
                while Instant::now() < until {
                    let latency = call(&client, &url).await;
                    let done = Instant::now();
                    if done < from || done >= until {
                        continue;
                    }
                    match latency {
                        Some(latency) => answered.push(latency),
                        None => errors += 1,
                    }
                }
                (answered, errors)
            })
        })
        .collect();
    let mut outcome = Outcome {
        answered: Vec::new(),
        errors: 0,
        upstream: (0, 0),
        limits: Vec::new(),
    };
    for task in loops {
        let (answered, errors) = task.await.unwrap();
        outcome.answered.extend(answered);
        outcome.errors += errors;
    }
    outcome.upstream = counter.await.unwrap();
    if let Some(sampler) = sampler {
        outcome.limits = sampler.await.unwrap();
    }
    outcome
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn report(label: &str, outcome: &mut Outcome, capacity: &Quota, load: &Load) {
    outcome.answered.sort_unstable();
    let calls = outcome.answered.len() + outcome.errors;
    let (answered, throttled) = outcome.upstream;
    let mut line = format!(
        "{label:<28}{:>8.0}{:>9.1}%{:>13.1}%{:>9.1}{:>9.1}{:>12.0}%",
        outcome.rps(load),
        100.0 * outcome.errors as f64 / calls.max(1) as f64,
        100.0 * throttled as f64 / (answered + throttled).max(1) as f64,
        percentile(&outcome.answered, 0.50),
        percentile(&outcome.answered, 0.99),
        100.0 * outcome.rps(load) / capacity.per_second(),
    );
    if !outcome.limits.is_empty() {
        let mean = outcome.limits.iter().sum::<f64>() / outcome.limits.len() as f64;
        line.push_str(&format!("   learnt limit: mean {mean:.1}"));
    }
    println!("{line}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let slots = env_or("BENCH_ADAPTIVE_SLOTS", 16usize).max(1);
    let capacity = Quota::new(
        slots,
        Duration::from_millis(env_or("BENCH_ADAPTIVE_LATENCY_MS", 20u64).max(1)),
    );
    let load = Load {
        clients: env_or("BENCH_ADAPTIVE_CLIENTS", 3 * slots).max(1),
        warmup: Duration::from_secs_f64(env_or("BENCH_ADAPTIVE_WARMUP_SECONDS", 1.0f64).max(0.0)),
        window: Duration::from_secs_f64(env_or("BENCH_ADAPTIVE_SECONDS", 7.0f64).max(0.1)),
    };
    let upstream = capacity.serve().await;
    println!(
        "adaptive bench: sluice as its own process; upstream capacity {} in flight × {} ms = {:.0} req/s, 429 (retry-after-ms: 20) beyond; {} client loops, {:.1} s warm-up + {:.1} s measured per scenario",
        capacity.slots,
        capacity.latency.as_millis(),
        capacity.per_second(),
        load.clients,
        load.warmup.as_secs_f64(),
        load.window.as_secs_f64(),
    );
    println!(
        "{:<28}{:>8}{:>10}{:>14}{:>9}{:>9}{:>13}",
        "scenario", "req/s", "errors", "upstream 429", "p50 ms", "p99 ms", "of capacity"
    );
    let direct = format!("http://{upstream}/v1/chat/completions");
    let mut reference = run(&direct, None, &capacity, &load).await;
    report("upstream directly", &mut reference, &capacity, &load);
    let scenarios = [
        ("(a) no limit", String::new()),
        (
            "(b) max_concurrency = 3N",
            format!("max_concurrency = {}", load.clients),
        ),
        ("(c) adaptive", r#"concurrency = "adaptive""#.to_owned()),
    ];
    let mut rates = Vec::new();
    for (label, extra) in &scenarios {
        let sluice = start_sluice(upstream, extra).await;
        let url = format!("{}/v1/chat/completions", sluice.url);
        let mut outcome = run(&url, Some(&sluice.url), &capacity, &load).await;
        report(label, &mut outcome, &capacity, &load);
        rates.push(outcome.rps(&load));
    }
    println!(
        "adaptive vs no limit, throughput: {:.2}x; adaptive vs fixed 3N: {:.2}x",
        rates[2] / rates[0].max(1e-9),
        rates[2] / rates[1].max(1e-9)
    );
}
