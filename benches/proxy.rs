//! Gateway overhead benchmark: `cargo bench --bench proxy`.
//!
//! An instant fake OpenAI upstream and Sluice in front of it both run in this
//! process, and Debian's nginx as a plain reverse proxy in front of the same
//! upstream (the practical limit; `scripts/bench-deps.sh` installs it, and
//! the bench runs without it). The same load is sent direct, through nginx
//! and through Sluice, in rotating rounds so machine noise hits all alike,
//! and medians of the rounds are reported. Knobs (env): BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS,
//! BENCH_WARMUP_SECONDS, BENCH_CONCURRENCY, BENCH_ROUNDS.
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
#[path = "common/nginx.rs"]
mod nginx;

use common::{
    COMPLETION, Params, SSE_DONE, Stats, concurrent, request, sequential, start_sluice,
    start_upstream,
};

#[tokio::main]
async fn main() {
    let p = Params::from_env();
    let upstream = start_upstream().await;
    let gateway = start_sluice(upstream).await;
    let nginx = nginx::start(upstream).await;
    let mut paths = vec![
        ("direct", format!("http://{upstream}/v1/chat/completions")),
        ("sluice", format!("http://{gateway}/v1/chat/completions")),
    ];
    match &nginx {
        Some(nginx) => paths.push((
            "nginx",
            format!("http://{}/v1/chat/completions", nginx.addr),
        )),
        None => println!("nginx not found: run scripts/bench-deps.sh to compare with it"),
    }
    let client = common::client(p.concurrency);

    // Sanity: Sluice relays the upstream's bytes unchanged in both modes.
    let (_, body) = request(&client, &paths[1].1, false).await;
    assert_eq!(body, COMPLETION.as_bytes(), "non-streaming body differs");
    let (_, body) = request(&client, &paths[1].1, true).await;
    assert!(body.ends_with(SSE_DONE), "stream did not end in [DONE]");

    println!(
        "sluice proxy bench: c1 {} req (+{} warm-up), c{} {:.1}s (+{:.1}s warm-up), {} rounds, {} cpus; medians of rounds",
        p.requests,
        p.warmup,
        p.concurrency,
        p.seconds.as_secs_f64(),
        p.warmup_seconds.as_secs_f64(),
        p.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "{:<14}{:<8}{:>10}{:>10}{:>10}",
        "mode", "path", "rps", "p50_us", "p99_us"
    );
    // results[mode][path], mode order: nonstream-c1, stream-c1, nonstream-cN, stream-cN.
    let mut results = Vec::new();
    for (stream, loaded) in [(false, false), (true, false), (false, true), (true, true)] {
        let mode = format!(
            "{}-c{}",
            if stream { "stream" } else { "nonstream" },
            if loaded { p.concurrency } else { 1 }
        );
        let mut rounds: Vec<Vec<Stats>> = vec![Vec::new(); paths.len()];
        for round in 0..p.rounds {
            // Rotate which path goes first so drift affects all alike.
            for k in 0..paths.len() {
                let i = (round + k) % paths.len();
                let url = &paths[i].1;
                let s = if loaded {
                    concurrent(&client, url, stream, &p).await
                } else {
                    sequential(&client, url, stream, &p).await
                };
                rounds[i].push(s);
            }
        }
        let mut row = Vec::new();
        for (i, (path, _)) in paths.iter().enumerate() {
            let s = Stats::median_of(&rounds[i]);
            println!(
                "{mode:<14}{path:<8}{:>10.0}{:>10.0}{:>10.0}",
                s.rps, s.p50_us, s.p99_us
            );
            row.push(s);
        }
        results.push(row);
    }
    let added = |m: usize| results[m][1].p50_us - results[m][0].p50_us;
    let ratio = |m: usize| results[m][1].rps / results[m][0].rps;
    let against_nginx = |m: usize| {
        results[m].get(2).map(|nginx| {
            (
                nginx.p50_us - results[m][0].p50_us,
                results[m][1].rps / nginx.rps,
            )
        })
    };
    println!();
    println!(
        "added latency p50 (non-streaming, unloaded): {:.0} us   (target < 150 us)",
        added(0)
    );
    println!(
        "added latency p50 (streaming, unloaded): {:.0} us",
        added(1)
    );
    let c = p.concurrency;
    println!(
        "throughput ratio sluice/direct (non-streaming, c{c}): {:.2}",
        ratio(2)
    );
    println!(
        "throughput ratio sluice/direct (streaming, c{c}): {:.2}",
        ratio(3)
    );
    for (m, what) in [
        (0, "non-streaming, c1"),
        (2, &*format!("non-streaming, c{c}")),
        (3, &*format!("streaming, c{c}")),
    ] {
        if let Some((nginx_added, sluice_over_nginx)) = against_nginx(m) {
            println!(
                "nginx ({what}): added p50 {nginx_added:.0} us; throughput ratio sluice/nginx {sluice_over_nginx:.2}"
            );
        }
    }
}
