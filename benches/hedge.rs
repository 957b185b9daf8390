//! Hedged requests benchmark: `cargo bench --bench hedge`.
//!
//! The real `sluice` binary (the release build `cargo bench` makes, or
//! `SLUICE_BIN`) runs as its own process in front of two fake deployments
//! of one model (`tests/common/tailed.rs`): the preferred one starts its
//! streams in 20 to 40 ms except one call in 40, which starts 800 ms late;
//! a backup (priority 1) is steady. Closed-loop clients make streamed chat
//! calls in three scenarios: the preferred deployment directly (the
//! reference), Sluice without hedging, and Sluice with `[models.gpt-4o.hedge]
//! percentile = 95, budget_percent = 5`. Printed per scenario: the time to
//! first chunk (p50, p90, p99, p99.9, max) and the extra upstream calls;
//! then hedged against not, and Sluice against the upstream directly.
//!
//! Knobs (env): BENCH_HEDGE_CALLS (2000 per scenario), BENCH_HEDGE_CLIENTS (8).
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
#[path = "../tests/common/tailed.rs"]
mod tailed;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::header::CONTENT_TYPE;

use common::{KEY, STREAM_BODY, env_or};
use process::{SluiceProcess, TempDir, free_port};
use tailed::Upstream;

async fn start_sluice(preferred: &str, backup: &str, hedge: bool) -> SluiceProcess {
    let dir = TempDir::new("sluice-hedge-bench");
    let port = free_port();
    let hedging = if hedge {
        "[models.gpt-4o.hedge]\npercentile = 95\nbudget_percent = 5\n"
    } else {
        ""
    };
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
[log]
level = "warn"
{hedging}
[[deployments]]
name = "preferred"
provider = "openai"
base_url = "{preferred}/v1"
api_key = "upstream-key"
models = ["gpt-4o"]
priority = 0
[[deployments]]
name = "backup"
provider = "openai"
base_url = "{backup}/v1"
api_key = "upstream-key"
models = ["gpt-4o"]
priority = 1
[[keys]]
name = "bench"
key = "{KEY}"
"#
    );
    let process = SluiceProcess::start(&dir.0, "bench", port, &config).await;
    process.owning(dir)
}

/// One streamed call read to its end: its time to first chunk.
async fn call(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(STREAM_BODY)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let start = started.elapsed();
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
    }
    start
}

/// `clients` loops share `calls` calls to `url`: the sorted starts.
async fn run(url: &str, calls: usize, clients: usize) -> Vec<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let url: Arc<str> = url.into();
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                let mut starts = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    starts.push(call(&client, &url).await);
                }
                starts
            })
        })
        .collect();
    let mut starts = Vec::new();
    for task in loops {
        starts.extend(task.await.unwrap());
    }
    starts.sort_unstable();
    starts
}

fn ms(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn report(label: &str, starts: &[Duration], extra: u64) {
    println!(
        "{label:<22}{:>9.1}{:>9.1}{:>9.1}{:>10.1}{:>9.1}{:>13.2}%",
        ms(starts, 0.50),
        ms(starts, 0.90),
        ms(starts, 0.99),
        ms(starts, 0.999),
        ms(starts, 1.0),
        100.0 * extra as f64 / starts.len() as f64,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let calls = env_or("BENCH_HEDGE_CALLS", 2000usize).max(100);
    let clients = env_or("BENCH_HEDGE_CLIENTS", 8usize).max(1);
    println!(
        "hedge bench: sluice as its own process; preferred deployment starts in 20-40 ms, one call in {} {} ms late; steady backup; {calls} streamed calls from {clients} closed-loop clients per scenario",
        tailed::TAIL_EVERY,
        tailed::TAIL.as_millis(),
    );
    println!(
        "{:<22}{:>9}{:>9}{:>9}{:>10}{:>9}{:>14}",
        "time to first chunk", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "extra calls"
    );
    let (_, preferred_url) = Upstream::start(true, false).await;
    let (backup, backup_url) = Upstream::start(false, false).await;
    let direct = run(
        &format!("{preferred_url}/v1/chat/completions"),
        calls,
        clients,
    )
    .await;
    report("upstream directly", &direct, 0);
    let mut results = Vec::new();
    for (label, hedge) in [("sluice, no hedging", false), ("sluice, hedged", true)] {
        let sluice = start_sluice(&preferred_url, &backup_url, hedge).await;
        let before = backup.calls.load(Ordering::Relaxed);
        let starts = run(
            &format!("{}/v1/chat/completions", sluice.url),
            calls,
            clients,
        )
        .await;
        let extra = backup.calls.load(Ordering::Relaxed) - before;
        report(label, &starts, extra);
        results.push(starts);
    }
    let (plain, hedged) = (&results[0], &results[1]);
    println!(
        "hedged / not, p99: {:.2}x, p99.9: {:.2}x, p50: {:.2}x; sluice (no hedging) / upstream directly, p50: {:.2}x, p99: {:.2}x",
        ms(hedged, 0.99) / ms(plain, 0.99),
        ms(hedged, 0.999) / ms(plain, 0.999),
        ms(hedged, 0.50) / ms(plain, 0.50),
        ms(plain, 0.50) / ms(&direct, 0.50),
        ms(plain, 0.99) / ms(&direct, 0.99),
    );
}
