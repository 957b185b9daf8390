//! Admission queue benchmark: `cargo bench --bench queue`.
//!
//! 1. What the queue costs when it never has to queue. (a) The
//!    `sluice::engines::queue::Scheduler` alone, 1000 slots: ns per acquire + release
//!    (median of batches), one task, and 8 tasks on the 2-worker runtime.
//!    (b) Two gateways in front of an instant fake upstream, one with
//!    `[server] max_concurrency = 1000` (admission layer on, never
//!    saturated) and one without (layer off), in alternating rounds: c1
//!    p50/p99 and cN req/s, medians of rounds.
//! 2. 10x overload: one deployment with `max_concurrency = 4` in front of a
//!    fake upstream that answers after 20 ms (capacity 4 / 20 ms = 200 req/s),
//!    `[queue] max_depth = 10000, max_wait = "30s"`; 40 closed-loop clients
//!    send `x-sluice-priority: batch` and 4 send `realtime` for a fixed
//!    window: completed req/s against capacity, p50/p99 per class, 503s.
//!
//! Knobs (env): BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS,
//! BENCH_WARMUP_SECONDS, BENCH_CONCURRENCY, BENCH_ROUNDS (1b);
//! BENCH_ACQUIRES (per task per batch), BENCH_BATCHES (1a);
//! BENCH_OVERLOAD_SECONDS (2, default 4; plus 1 s of warm-up).
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

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use sluice::config::{Priority, QueueConfig};
use sluice::engines::queue::Scheduler;

use common::{
    BODY, COMPLETION, Gateway, Params, TomlExtra, chat_url, env_or, gateway_toml_with,
    request_status,
};

/// Slots of the uncontended scheduler and gateway: far above any load here.
const ROOMY: usize = 1000;
/// Tasks of the multi-task microbenchmark.
const TASKS: usize = 8;

/// The overload scenario: the upstream's service time, the deployment's
/// slots, and the closed-loop clients per class.
const SERVICE: Duration = Duration::from_millis(20);
const SLOTS: usize = 4;
const BATCH_CLIENTS: usize = 40;
const REALTIME_CLIENTS: usize = 4;
const OVERLOAD_WARMUP: Duration = Duration::from_secs(1);
/// Unloaded requests through the overload gateway, for the baseline latency.
const BASELINE_REQUESTS: usize = 25;
/// A client pauses this long after a failed request, so a broken gateway
/// cannot turn the closed loop into a hot spin.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// 1a. The scheduler alone

/// One task's loop of uncontended acquire + release; returns refusals.
async fn acquire_loop(scheduler: Arc<Scheduler>, key: Arc<str>, acquires: usize) -> usize {
    let mut refused = 0;
    for _ in 0..acquires {
        // The key is cloned per call, as the admission layer does.
        match scheduler.acquire(Priority::Standard, key.clone()).await {
            Ok(permit) => drop(black_box(permit)),
            Err(_) => refused += 1,
        }
    }
    refused
}

/// Wall time of `tasks` tasks (spawned together) over all their acquires,
/// in ns per acquire + release; and the refusals.
async fn acquire_batch(scheduler: &Arc<Scheduler>, tasks: usize, acquires: usize) -> (f64, usize) {
    let keys: Vec<Arc<str>> = (0..tasks).map(|_| Arc::from("bench")).collect();
    let started = Instant::now();
    let handles: Vec<_> = keys
        .into_iter()
        .map(|key| tokio::spawn(acquire_loop(scheduler.clone(), key, acquires)))
        .collect();
    let mut refused = 0;
    for handle in handles {
        refused += handle.await.expect("acquire task failed");
    }
    let total = (tasks * acquires) as f64;
    (started.elapsed().as_secs_f64() * 1e9 / total, refused)
}

/// Prints the table; returns the median ns for one task and for `TASKS`.
async fn scheduler_alone(acquires: usize, batches: usize) -> (f64, f64) {
    let scheduler = Scheduler::new(ROOMY, Arc::new(QueueConfig::default()));
    let scenarios = [
        (1usize, "(a) 1 task"),
        (TASKS, "(b) 8 tasks, one scheduler"),
    ];
    let mut samples = [Vec::new(), Vec::new()];
    let mut refused = 0;
    // Batch 0 warms up and is not counted; the scenarios take turns.
    for batch in 0..=batches {
        for (i, (tasks, _)) in scenarios.iter().enumerate() {
            let (ns, r) = acquire_batch(&scheduler, *tasks, acquires).await;
            refused += r;
            if batch > 0 {
                samples[i].push(ns);
            }
        }
    }
    println!(
        "1a. Scheduler::new({ROOMY}, QueueConfig::default()): acquire(Priority::Standard, key) + drop(permit), {acquires} per task per batch, median of {batches} batches (+1 warm-up), tokio multi-thread, 2 workers"
    );
    println!(
        "{:<40}{:>12}{:>10}{:>10}",
        "scenario", "ns/acquire", "min", "max"
    );
    let mut medians = [0.0; 2];
    for (i, (_, label)) in scenarios.iter().enumerate() {
        let min = samples[i].iter().copied().fold(f64::MAX, f64::min);
        let max = samples[i].iter().copied().fold(0.0, f64::max);
        medians[i] = common::median(samples[i].clone());
        println!("{label:<40}{:>12.1}{min:>10.1}{max:>10.1}", medians[i]);
    }
    if refused > 0 {
        println!("    WARNING: {refused} acquires were refused");
    }
    assert_eq!(scheduler.in_use(), 0, "a slot leaked");
    assert_eq!(scheduler.depth(), 0, "an uncontended acquire queued");
    println!(
        "(b) is wall time / all acquires of {TASKS} tasks on 2 workers: with no contention cost it approaches (a) / 2"
    );
    (medians[0], medians[1])
}

// ---------------------------------------------------------------------------
// 1b. Gateways with the admission layer on and off

/// Sanity: `[server] max_concurrency` from config text does switch the
/// admission layer on. One slot, no queue, a 200 ms upstream: of two
/// requests at once, one is served and one refused by "this gateway".
async fn admission_layer_is_on(client: &reqwest::Client) -> bool {
    let slow = common::start_delayed_upstream(Duration::from_millis(200)).await;
    let addr = common::start_gateway(&gateway_toml_with(
        slow,
        &TomlExtra {
            server: "max_concurrency = 1",
            sections: "[queue]\nmax_depth = 0\n",
            ..TomlExtra::default()
        },
    ))
    .await;
    let url = chat_url(addr);
    let first = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { request_status(&client, &url, BODY, &[]).await.1 })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = client
        .post(&url)
        .bearer_auth(common::KEY)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BODY)
        .send()
        .await
        .expect("request failed");
    let refused = second.status() == StatusCode::SERVICE_UNAVAILABLE
        && second
            .text()
            .await
            .is_ok_and(|text| text.contains("this gateway"));
    let served = first.await.expect("first request task") == Some(StatusCode::OK);
    refused && served
}

/// Prints the table; returns (added c1 p50 us, cN throughput on/off).
async fn gateways(p: &Params) -> (f64, f64) {
    let c = p.concurrency;
    let upstream = common::start_upstream().await;
    let client = common::client(c);
    let off = common::start_gateway(&gateway_toml_with(upstream, &TomlExtra::default())).await;
    let server = format!("max_concurrency = {ROOMY}");
    let on = common::start_gateway(&gateway_toml_with(
        upstream,
        &TomlExtra {
            server: &server,
            ..TomlExtra::default()
        },
    ))
    .await;
    let mut gateways = [Gateway::new("queue-off", off), Gateway::new("queue-on", on)];
    for gateway in &gateways {
        let (_, body) = common::request(&client, &gateway.url, false).await;
        assert_eq!(
            body,
            COMPLETION.as_bytes(),
            "{}: body differs",
            gateway.name
        );
    }
    assert!(
        admission_layer_is_on(&client).await,
        "a gateway with [server] max_concurrency = 1 and no queue did not refuse a second request"
    );

    println!(
        "1b. gateways in front of an instant fake upstream, [server] max_concurrency = {ROOMY} (queue-on) vs unset (queue-off): {}",
        p.plan()
    );
    println!(
        "sanity: with max_concurrency = 1 and max_depth = 0, a second request at once gets 503 from \"this gateway\" (the layer is on)"
    );
    if c >= ROOMY {
        println!("    WARNING: c{c} reaches the {ROOMY} slots: queue-on is not uncontended");
    }
    common::run_rounds(&client, &mut gateways, BODY, p).await;
    let (c1, loaded) = common::print_round_medians(&gateways, c);
    (c1[1].p50_us - c1[0].p50_us, loaded[1].rps / loaded[0].rps)
}

// ---------------------------------------------------------------------------
// 2. 10x overload

/// What one closed-loop client saw.
#[derive(Default)]
struct Tally {
    /// Latencies of 2xx answers that completed inside the window.
    latencies: Vec<Duration>,
    /// 503 answers, over the whole run.
    unavailable: usize,
    /// Other statuses and transport errors, over the whole run.
    other: usize,
}

/// Sends `class` requests back to back until `until`; counts what completes
/// in `[from, until)`.
async fn closed_loop(
    client: reqwest::Client,
    url: Arc<str>,
    class: &'static str,
    from: Instant,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let headers = [("x-sluice-priority", class)];
    while Instant::now() < until {
        let (took, status) = request_status(&client, &url, BODY, &headers).await;
        let done = Instant::now();
        match status {
            Some(status) if status.is_success() => {
                if done >= from && done < until {
                    tally.latencies.push(took);
                }
            }
            failed => {
                if failed == Some(StatusCode::SERVICE_UNAVAILABLE) {
                    tally.unavailable += 1;
                } else {
                    tally.other += 1;
                }
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
    }
    tally
}

/// p50, p99 and max in ms (nearest rank).
fn percentiles_ms(mut latencies: Vec<Duration>) -> (f64, f64, f64) {
    latencies.sort_unstable();
    let pct = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies
            .get(rank - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (pct(0.50), pct(0.99), pct(1.0))
}

/// Sequential requests, after 3 unmeasured; p50 in ms.
async fn unloaded_p50_ms(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, &'static str)],
) -> f64 {
    let mut latencies = Vec::with_capacity(BASELINE_REQUESTS);
    for i in 0..BASELINE_REQUESTS + 3 {
        let (took, status) = request_status(client, url, BODY, headers).await;
        assert_eq!(status, Some(StatusCode::OK), "unloaded request failed");
        if i >= 3 {
            latencies.push(took);
        }
    }
    percentiles_ms(latencies).0
}

async fn overload(seconds: Duration) {
    let upstream = common::start_delayed_upstream(SERVICE).await;
    let deployment = format!("max_concurrency = {SLOTS}");
    let gateway = common::start_gateway(&gateway_toml_with(
        upstream,
        &TomlExtra {
            deployment: &deployment,
            sections: "[queue]\nmax_depth = 10000\nmax_wait = \"30s\"\n",
            ..TomlExtra::default()
        },
    ))
    .await;
    let clients = BATCH_CLIENTS + REALTIME_CLIENTS;
    let client = common::client(clients);
    let url: Arc<str> = chat_url(gateway).into();

    // Baselines: one service time, direct and through the idle gateway.
    let direct_ms = unloaded_p50_ms(&client, &chat_url(upstream), &[]).await;
    let realtime = [("x-sluice-priority", "realtime")];
    let through_ms = unloaded_p50_ms(&client, &url, &realtime).await;
    let (_, body) = common::request(&client, &url, false).await;
    assert_eq!(
        body,
        COMPLETION.as_bytes(),
        "overload gateway: body differs"
    );

    let from = Instant::now() + OVERLOAD_WARMUP;
    let until = from + seconds;
    let spawn = |class: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(closed_loop(client, url, class, from, until))
    };
    let realtime_tasks: Vec<_> = (0..REALTIME_CLIENTS).map(|_| spawn("realtime")).collect();
    let batch_tasks: Vec<_> = (0..BATCH_CLIENTS).map(|_| spawn("batch")).collect();
    let mut tallies = Vec::new();
    for tasks in [realtime_tasks, batch_tasks] {
        let mut all = Tally::default();
        for task in tasks {
            let tally = task.await.expect("load task failed");
            all.latencies.extend(tally.latencies);
            all.unavailable += tally.unavailable;
            all.other += tally.other;
        }
        tallies.push(all);
    }

    let window = seconds.as_secs_f64();
    let capacity = SLOTS as f64 / SERVICE.as_secs_f64();
    let measured_capacity = SLOTS as f64 / (direct_ms / 1e3);
    println!(
        "2. 10x overload: one deployment, max_concurrency = {SLOTS}, upstream answers after {} ms (capacity {SLOTS} / {} ms = {capacity:.0} req/s); [queue] max_depth = 10000, max_wait = \"30s\"",
        SERVICE.as_millis(),
        SERVICE.as_millis(),
    );
    println!(
        "   closed loop, {BATCH_CLIENTS} batch + {REALTIME_CLIENTS} realtime clients ({clients} requests outstanding for {SLOTS} slots, {:.0}x), one key; {window:.1}s measured after {:.1}s warm-up",
        clients as f64 / SLOTS as f64,
        OVERLOAD_WARMUP.as_secs_f64(),
    );
    println!(
        "   unloaded p50: direct to the upstream {direct_ms:.1} ms, through the idle gateway {through_ms:.1} ms"
    );
    println!(
        "{:<10}{:>9}{:>8}{:>9}{:>10}{:>10}{:>10}{:>7}{:>7}",
        "class", "clients", "done", "rps", "p50_ms", "p99_ms", "max_ms", "503s", "other"
    );
    let mut total_done = 0;
    let mut total_503 = 0;
    let mut total_other = 0;
    let mut p = Vec::new();
    for ((class, n), tally) in [("realtime", REALTIME_CLIENTS), ("batch", BATCH_CLIENTS)]
        .into_iter()
        .zip(tallies)
    {
        let done = tally.latencies.len();
        let (p50, p99, max) = percentiles_ms(tally.latencies);
        println!(
            "{class:<10}{n:>9}{done:>8}{:>9.1}{p50:>10.1}{p99:>10.1}{max:>10.1}{:>7}{:>7}",
            done as f64 / window,
            tally.unavailable,
            tally.other
        );
        total_done += done;
        total_503 += tally.unavailable;
        total_other += tally.other;
        p.push((p50, p99));
    }
    let rps = total_done as f64 / window;
    println!(
        "{:<10}{clients:>9}{total_done:>8}{rps:>9.1}{:>10}{:>10}{:>10}{total_503:>7}{total_other:>7}",
        "total", "-", "-", "-"
    );
    println!();
    println!(
        "overload throughput: {rps:.1} req/s = {:.3} of capacity {capacity:.0} ({SLOTS} / {} ms); {:.3} of {measured_capacity:.1} ({SLOTS} / measured {direct_ms:.1} ms)",
        rps / capacity,
        SERVICE.as_millis(),
        rps / measured_capacity,
    );
    println!(
        "realtime p50 {:.1} ms, p99 {:.1} ms = {:.2}x / {:.2}x the unloaded latency through the gateway ({through_ms:.1} ms)",
        p[0].0,
        p[0].1,
        p[0].0 / through_ms,
        p[0].1 / through_ms,
    );
    println!(
        "batch p50 {:.1} ms, p99 {:.1} ms = {:.1}x / {:.1}x the realtime p50 / p99 (batch absorbs the wait)",
        p[1].0,
        p[1].1,
        p[1].0 / p[0].0,
        p[1].1 / p[0].1,
    );
    println!(
        "503s: {total_503}; other failures: {total_other} (whole run, warm-up and drain included)"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let p = Params::from_env();
    let acquires = env_or("BENCH_ACQUIRES", 200_000usize).max(1);
    let batches = env_or("BENCH_BATCHES", 7usize).max(1);
    let overload_seconds =
        Duration::from_secs_f64(env_or("BENCH_OVERLOAD_SECONDS", 4.0f64).max(0.1));
    println!(
        "sluice queue bench: {} cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();

    let (one, many) = scheduler_alone(acquires, batches).await;
    println!();
    let (added_p50, ratio) = gateways(&p).await;
    println!();
    println!(
        "Scheduler acquire + release, uncontended: {one:.1} ns (1 task), {many:.1} ns (8 tasks on 2 workers, wall / acquires; {:.2}x of 1 task)",
        many / one
    );
    println!("admission layer on / off, c1 p50 added latency: {added_p50:+.1} us");
    println!(
        "admission layer on / off, c{} throughput: {ratio:.3}",
        p.concurrency
    );
    println!();
    overload(overload_seconds).await;
}
