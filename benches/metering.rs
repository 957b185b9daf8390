//! Metering and usage ledger benchmark: `cargo bench --bench metering`.
//!
//! 1. Three gateways in front of one instant fake upstream, in rotating
//!    rounds: "ledger-off" (no `[usage]` section, so `store = "none"`; no
//!    budgets), "off-again" (the same config: two identical gateways show
//!    how far this machine's noise alone moves a ratio) and "ledger-on"
//!    (`[usage] store = "sqlite"` in a fresh temp directory, default
//!    batching; `budget_daily_usd = 1000000.0` on the bench key, so every
//!    request is checked against and charged to an in-memory budget that
//!    never refuses). c1 p50/p99, cN req/s and process CPU time per request;
//!    ratios are taken per round (on and off measured seconds apart) and
//!    their median reported with the range, beside the off-again / off
//!    ratios as the noise floor.
//!    "ledger-on" includes the journal: every record is also appended to
//!    `<data_dir>/usage.journal.<n>` within `journal_interval` (2 ms).
//! 2. Nothing lost: the on gateway is shut down gracefully (`Gateway::serve`
//!    returns after the ledger has written what it holds), then the rows of
//!    `<data_dir>/usage.db` are counted against every request it answered,
//!    warm-ups and sanity checks included, and the journal is checked to be
//!    empty (all committed). The temp directory is removed.
//!
//! Knobs (env): BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS,
//! BENCH_WARMUP_SECONDS, BENCH_CONCURRENCY, BENCH_ROUNDS; defaults here are
//! 21 rounds of 500 c1 requests (+50) and 0.5 s at c32 (+0.1 s).
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench prints its report and stops at a broken setup"
)]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::StatusCode;

use common::{BODY, COMPLETION, Gateway, Params, Stats, chat_url, gateway_toml, request_status};

/// The bench key's daily budget when on: checked and charged, never reached.
const ROOMY_BUDGET: &str = "budget_daily_usd = 1000000.0";
/// What one `COMPLETION` costs at the shipped gpt-4o prices: 9 prompt tokens
/// at $2.50 and 9 completion tokens at $10.00 per million.
const COST_PER_REQUEST: f64 = (9.0 * 2.50 + 9.0 * 10.0) / 1_000_000.0;
/// Longest the graceful shutdown (drain + ledger flush) may take.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(30);
/// Without a graceful shutdown, how long the ledger writer gets to flush
/// (its default interval is 1 s).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A fresh directory under the system temp dir, removed on drop (also when a
/// sanity check fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let name = format!(
            "sluice-bench-metering-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("creating the temp data_dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sanity: a budget set in config text is enforced and charged. With a
/// daily budget below one request's cost, the first request is served and,
/// once its charge lands, the next is refused with 429 `insufficient_quota`.
async fn budgets_are_on(client: &reqwest::Client, upstream: SocketAddr) -> bool {
    let addr =
        common::start_gateway(&gateway_toml(upstream, "budget_daily_usd = 0.0001", "")).await;
    let url = chat_url(addr);
    if request_status(client, &url, BODY, &[]).await.1 != Some(StatusCode::OK) {
        return false;
    }
    // The charge is spawned after the response; poll for it, bounded.
    for _ in 0..100 {
        let response = client
            .post(&url)
            .bearer_auth(common::KEY)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(BODY)
            .send()
            .await
            .expect("request failed");
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return response
                .text()
                .await
                .is_ok_and(|text| text.contains("insufficient_quota"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Many short rounds unless told otherwise: this machine's noise drifts over
/// seconds, so the ratios of neighbouring short rounds are steadier than
/// those of a few long ones.
fn params() -> Params {
    let mut p = Params::from_env();
    let unset = |name: &str| std::env::var_os(name).is_none();
    if unset("BENCH_ROUNDS") {
        p.rounds = 21;
    }
    if unset("BENCH_SECONDS") {
        p.seconds = Duration::from_millis(500);
    }
    if unset("BENCH_WARMUP_SECONDS") {
        p.warmup_seconds = Duration::from_millis(100);
    }
    if unset("BENCH_REQUESTS") {
        p.requests = 500;
    }
    if unset("BENCH_WARMUP") {
        p.warmup = 50;
    }
    p
}

/// `on / off` of one measure, round by round: median, min and max.
fn paired(on: &[Stats], off: &[Stats], measure: fn(&Stats) -> f64) -> (f64, f64, f64) {
    let ratios: Vec<f64> = on
        .iter()
        .zip(off)
        .map(|(on, off)| measure(on) / measure(off))
        .collect();
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (common::median(ratios), min, max)
}

fn print_paired(what: &str, [off, again, on]: &[Gateway; 3], measure: fn(&Stats) -> f64) -> f64 {
    let (ratio, min, max) = paired(&on.loaded, &off.loaded, measure);
    let (noise, noise_min, noise_max) = paired(&again.loaded, &off.loaded, measure);
    println!(
        "{what}: ledger-on / ledger-off {ratio:.3} ({:+.1}%) [rounds {min:.3}..{max:.3}]; off-again / ledger-off {noise:.3} [rounds {noise_min:.3}..{noise_max:.3}]",
        (ratio - 1.0) * 100.0
    );
    ratio
}

/// CPU time the ledger's journal thread has used so far (Linux: its
/// `schedstat`, in nanoseconds): the journal's own cost, free of the noise
/// that moves whole-process ratios.
fn journal_thread_cpu() -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.trim() == sluice::engines::ledger::JOURNAL_THREAD {
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let nanos = stat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(nanos));
        }
    }
    None
}

/// Records still in the journal: its non-empty lines.
fn journal_lines(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("usage.journal.")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|bytes| {
            bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        })
        .sum()
}

/// What the ledger wrote: rows, rows with status 200, and their cost.
fn ledger_rows(db: &Path) -> rusqlite::Result<(i64, i64, f64)> {
    let connection =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    connection.query_row(
        "SELECT COUNT(*), COALESCE(SUM(status = 200), 0), COALESCE(SUM(cost_usd), 0.0) FROM sluice_usage",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
}

#[tokio::main]
async fn main() {
    let p = params();
    let c = p.concurrency;
    let data_dir = TempDir::new();
    let dir = data_dir.path().display().to_string();
    assert!(!dir.contains('\''), "temp dir {dir} needs TOML escaping");

    let upstream = common::start_upstream().await;
    let client = common::client(c);
    let off = common::start_gateway(&gateway_toml(upstream, "", "")).await;
    let off_again = common::start_gateway(&gateway_toml(upstream, "", "")).await;
    let usage = format!("[usage]\nstore = \"sqlite\"\ndata_dir = '{dir}'\n");
    let on = common::start_gateway_stoppable(&gateway_toml(upstream, ROOMY_BUDGET, &usage)).await;
    // Every request the on gateway answered; each should become one row.
    let mut sent_on = 0usize;

    let mut gateways = [
        Gateway::new("ledger-off", off),
        Gateway::new("off-again", off_again),
        Gateway::new("ledger-on", on.addr),
    ];
    for gateway in &gateways {
        let (_, body) = common::request(&client, &gateway.url, false).await;
        assert_eq!(
            body,
            COMPLETION.as_bytes(),
            "{}: body differs",
            gateway.name
        );
    }
    sent_on += 1;
    assert!(
        budgets_are_on(&client, upstream).await,
        "a key with budget_daily_usd below one request's cost was not refused after its first request"
    );

    println!(
        "sluice metering bench: {} cpus; data_dir {dir}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "1. gateways in front of an instant fake upstream: ledger-on = [usage] store = \"sqlite\" (default batching) + {ROOMY_BUDGET} on the key; ledger-off and off-again = store = \"none\", no budgets"
    );
    println!("   {}", p.plan());
    println!(
        "sanity: bodies relayed unchanged; with budget_daily_usd = 0.0001 the second request gets 429 insufficient_quota (budgets are checked and charged)"
    );

    let started = Instant::now();
    let journal_before = journal_thread_cpu();
    let sent_in_rounds = common::run_rounds(&client, &mut gateways, BODY, &p).await[2];
    sent_on += sent_in_rounds;
    let measured = started.elapsed();
    let journal_cpu = journal_thread_cpu()
        .zip(journal_before)
        .map(|(after, before)| after.saturating_sub(before));

    let (c1, cn) = common::print_round_medians(&gateways, c);
    println!(
        "c{c} process CPU per request (us): ledger-off {:.1}, off-again {:.1}, ledger-on {:.1}",
        cn[0].cpu_us, cn[1].cpu_us, cn[2].cpu_us
    );
    println!();
    println!(
        "ledger on / off, c1 p50: {:.3} ({:+.1} us); c1 p99: {:.3} ({:+.1} us)",
        c1[2].p50_us / c1[0].p50_us,
        c1[2].p50_us - c1[0].p50_us,
        c1[2].p99_us / c1[0].p99_us,
        c1[2].p99_us - c1[0].p99_us,
    );
    println!("per-round ratios (target: ledger-on within 5% of ledger-off):");
    print_paired(&format!("  c{c} throughput"), &gateways, |s| s.rps);
    print_paired(&format!("  c{c} CPU per request"), &gateways, |s| s.cpu_us);
    println!("(load phase: {:.1}s)", measured.as_secs_f64());
    match journal_cpu {
        Some(cpu) => println!(
            "journal thread CPU over the load phase: {:.0} ms, {:.2} us per ledger-on request (ticks while idle included)",
            cpu.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e6 / sent_in_rounds.max(1) as f64
        ),
        None => println!("journal thread CPU: not found in /proc/self/task"),
    }

    // 2. Nothing lost.
    let dropped = common::metric(&client, on.addr, "sluice_ledger_dropped_total").await;
    let errors = common::metric(&client, on.addr, "sluice_ledger_store_errors_total").await;
    drop(client);
    let stopping = Instant::now();
    let graceful = on.shutdown(SHUTDOWN_WITHIN).await;
    let stop_ms = stopping.elapsed().as_secs_f64() * 1e3;
    println!();
    if graceful {
        println!("2. ledger-on shut down gracefully in {stop_ms:.0} ms (drain + ledger flush)");
    } else {
        println!(
            "2. WARNING: ledger-on did not shut down within {}s; waiting {}s for the writer",
            SHUTDOWN_WITHIN.as_secs(),
            FLUSH_WAIT.as_secs()
        );
        tokio::time::sleep(FLUSH_WAIT).await;
    }
    let db = data_dir.path().join("usage.db");
    match ledger_rows(&db) {
        Ok((rows, ok, cost)) => {
            println!("ledger rows: {rows} of {sent_on} requests sent");
            println!(
                "   status 200: {ok}; cost_usd sum ${cost:.4} (expected {sent_on} x ${COST_PER_REQUEST} = ${:.4}); sluice_ledger_dropped_total {dropped}, sluice_ledger_store_errors_total {errors}",
                sent_on as f64 * COST_PER_REQUEST
            );
            if rows != sent_on as i64 {
                println!(
                    "   WARNING: {} requests without a row",
                    sent_on as i64 - rows
                );
            }
        }
        Err(error) => println!("ledger rows: cannot read {}: {error}", db.display()),
    }
    println!(
        "journal after shutdown: {} records left (expected 0)",
        journal_lines(data_dir.path())
    );
    drop(data_dir);
}
