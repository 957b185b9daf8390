//! Rate-limit cost benchmark: `cargo bench --bench limits`.
//!
//! 1. The `Limiter` alone: ns per `check` (median of batches) for one task on
//!    an RPM key, an RPM+TPM key (tiktoken counting included), 8 tasks on one
//!    key bucket, 8 tasks on 8 keys, and a key without limits.
//! 2. Gateways in front of one instant fake upstream, limits off vs in-memory
//!    limits, in rotating rounds: c1 p50 latency and cN req/s.
//! 3. The same with the Redis engine (`BENCH_REDIS_URL`, default
//!    redis://127.0.0.1:6379), skipped when Redis cannot be reached.
//!
//! Knobs (env): BENCH_CHECKS (checks per task per batch), BENCH_BATCHES,
//! BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS, BENCH_WARMUP_SECONDS,
//! BENCH_CONCURRENCY, BENCH_ROUNDS, BENCH_REDIS_URL.
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

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::call::ApiRequest;
use sluice::engines::limits::{CallFacts, Check, LimitState, Limiter};
use sluice::engines::routing::{DeploymentStates, ModelRouter};
use sluice::engines::tokens::BodyView;
use sluice::infra::metrics::Metrics;
use sluice::upstream::{Deployment, Providers};
use sluice::util::tasks::Tasks;
use sluice::vocab::Endpoint;
use sluice::vocab::Identity;

use common::{Gateway, Params, env_or, exchange, gateway_toml};

/// Limits high enough that nothing in this run is ever refused.
const HUGE: u64 = 1_000_000_000;
/// Tasks in the contended and uncontended check scenarios.
const TASKS: usize = 8;
const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// A chat body with a ~50-token prompt (counted when the key has a TPM limit).
const CHECK_BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"You are a concise assistant. Summarize the main trade-offs between token bucket and GCRA rate limiting for an API gateway that serves many tenants, in three short bullet points, and mention how Redis changes the picture."}]}"#;

// ---------------------------------------------------------------------------
// 1. The limiter alone

/// Config for the check loop: keys with RPM, RPM+TPM, none, and one RPM key
/// per task; a config-only mock deployment serves the model.
fn check_config() -> String {
    let mut toml = format!(
        r#"
[[deployments]]
name = "mock"
provider = "mock"
models = ["gpt-4o"]

[[keys]]
name = "bench"
key = "sk-bench-rpm-0001"
rpm = {HUGE}

[[keys]]
name = "bench-tpm"
key = "sk-bench-tpm-0001"
rpm = {HUGE}
tpm = {HUGE}

[[keys]]
name = "free"
key = "sk-bench-free-0001"
"#
    );
    for task in 0..TASKS {
        toml.push_str(&format!(
            "\n[[keys]]\nname = \"task-{task}\"\nkey = \"sk-bench-task-{task:04}\"\nrpm = {HUGE}\n"
        ));
    }
    toml
}

fn identity(name: &str) -> Arc<Identity> {
    Arc::new(Identity::unrestricted(name))
}

/// One task's loop; returns how many checks did not give `expected`.
async fn check_loop(
    limiter: Arc<Limiter>,
    identity: Arc<Identity>,
    api: ApiRequest,
    checks: usize,
    unlimited: bool,
) -> usize {
    let mut unexpected = 0;
    for _ in 0..checks {
        // A fresh view per check, as each call brings: its parse and its
        // token count are part of what is measured.
        let call = ApiRequest {
            view: BodyView::read(api.endpoint, &api.body).await,
            ..api.clone()
        };
        let facts = CallFacts {
            route: &call.route,
            view: &call.view,
            endpoint: call.endpoint,
            affinity: call.affinity,
        };
        let check = limiter.check(&identity, facts).await;
        let ok = match &check {
            Check::Unlimited => unlimited,
            Check::Admitted(_) => !unlimited,
            Check::Refused(_) => false,
        };
        unexpected += usize::from(!ok);
        drop(black_box(check));
    }
    unexpected
}

struct Scenario {
    label: &'static str,
    /// One task per key name.
    keys: Vec<String>,
    unlimited: bool,
    /// ns per check, one entry per batch.
    samples: Vec<f64>,
    unexpected: usize,
}

impl Scenario {
    fn new(label: &'static str, keys: Vec<String>, unlimited: bool) -> Self {
        Self {
            label,
            keys,
            unlimited,
            samples: Vec::new(),
            unexpected: 0,
        }
    }

    /// Wall time of all tasks (spawned together) over all their checks.
    async fn batch(&self, limiter: &Arc<Limiter>, api: &ApiRequest, checks: usize) -> (f64, usize) {
        let identities: Vec<_> = self.keys.iter().map(|k| identity(k)).collect();
        let started = Instant::now();
        let tasks: Vec<_> = identities
            .into_iter()
            .map(|id| {
                tokio::spawn(check_loop(
                    limiter.clone(),
                    id,
                    api.clone(),
                    checks,
                    self.unlimited,
                ))
            })
            .collect();
        let mut unexpected = 0;
        for task in tasks {
            unexpected += task.await.expect("check task failed");
        }
        let total = (checks * self.keys.len()) as f64;
        (started.elapsed().as_secs_f64() * 1e9 / total, unexpected)
    }
}

/// Returns the scenarios with their median ns per check, in print order.
async fn limiter_checks(checks: usize, batches: usize) -> Vec<(&'static str, f64)> {
    let config = sluice::config::load_from_str(&check_config(), "bench", &HashMap::new())
        .expect("check config");
    let providers =
        Providers::default().with_local(sluice::config::Provider::Mock, sluice::mock::provider);
    let deployment =
        Arc::new(Deployment::from_config(&config.deployments[0], &providers).expect("deployment"));
    let router = ModelRouter::new(&config, vec![deployment], &DeploymentStates::default());
    let api = ApiRequest {
        endpoint: Endpoint::ChatCompletions,
        body: Bytes::from_static(CHECK_BODY.as_bytes()),
        view: BodyView::opaque(Endpoint::ChatCompletions, 0),
        requested: Arc::from("gpt-4o"),
        route: router.route("gpt-4o").expect("route").clone(),
        stream: false,
        store: false,
        affinity: None,
        priority: sluice::config::Priority::Standard,
        received: tokio::time::Instant::now(),
        hide_usage: false,
        include_usage: false,
        content_type: None,
        stored: None,
    };
    let limiter = Arc::new(
        Limiter::from_config(
            &config,
            &LimitState::new(),
            &sluice::infra::Shared {
                metrics: Metrics::new().expect("metrics"),
                tasks: Tasks::new(),
                redis: None,
            },
        )
        .expect("config sets limits"),
    );
    let one = |name: &str| vec![name.to_owned()];
    let mut scenarios = [
        Scenario::new("(a) 1 task, RPM", one("bench"), false),
        Scenario::new("(b) 1 task, RPM+TPM (tiktoken)", one("bench-tpm"), false),
        Scenario::new(
            "(c) 8 tasks, same key (contended)",
            vec!["bench".to_owned(); TASKS],
            false,
        ),
        Scenario::new(
            "(d) 8 tasks, own keys (uncontended)",
            (0..TASKS).map(|t| format!("task-{t}")).collect(),
            false,
        ),
        Scenario::new("(e) 1 task, key without limits", one("free"), true),
    ];
    // Batch 0 warms caches and the tokenizer; it is not counted. Scenarios
    // take turns within each batch so drift hits them all alike.
    for batch in 0..=batches {
        for scenario in &mut scenarios {
            let (ns, unexpected) = scenario.batch(&limiter, &api, checks).await;
            scenario.unexpected += unexpected;
            if batch > 0 {
                scenario.samples.push(ns);
            }
        }
    }
    println!(
        "1. limiter check cost: {checks} checks per task per batch, median of {batches} batches (+1 warm-up), tokio multi-thread, 2 workers"
    );
    println!(
        "{:<40}{:>10}{:>10}{:>10}",
        "scenario", "ns/check", "min", "max"
    );
    let mut medians = Vec::new();
    for scenario in &scenarios {
        let min = scenario.samples.iter().copied().fold(f64::MAX, f64::min);
        let max = scenario.samples.iter().copied().fold(0.0, f64::max);
        let median = common::median(scenario.samples.clone());
        println!("{:<40}{median:>10.0}{min:>10.0}{max:>10.0}", scenario.label);
        if scenario.unexpected > 0 {
            println!(
                "    WARNING: {} checks were refused or of the wrong kind",
                scenario.unexpected
            );
        }
        medians.push((scenario.label, median));
    }
    println!(
        "(c) and (d) are wall time / all checks of {TASKS} tasks on 2 workers: with no contention cost they approach (a) / 2"
    );
    medians
}

// ---------------------------------------------------------------------------
// 2 and 3. Gateways

/// The Redis limiter connects in the background and fails open until then:
/// wait (at most 3 s) for a response that carries the key's headers.
async fn wait_for_limit_headers(client: &reqwest::Client, url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (_, headers, _) = exchange(client, url, false).await;
        if headers.contains_key(REMAINING_REQUESTS) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let p = Params::from_env();
    let checks = env_or("BENCH_CHECKS", 40_000usize).max(1);
    let batches = env_or("BENCH_BATCHES", 7usize).max(1);
    let redis_url = common::redis_url();
    println!(
        "sluice limits bench: {} cpus; limits are rpm = tpm = {HUGE} (never refused)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!();

    let checks_ns = limiter_checks(checks, batches).await;
    let ns = |i: usize| checks_ns[i].1;
    println!();
    println!(
        "check overhead over an unlimited key (a - e): {:.0} ns",
        ns(0) - ns(4)
    );
    println!("RPM+TPM / RPM (b/a): {:.2}x", ns(1) / ns(0));
    println!("contended / 1 task (c/a): {:.2}x", ns(2) / ns(0));
    println!("uncontended / 1 task (d/a): {:.2}x", ns(3) / ns(0));
    println!("contended / uncontended (c/d): {:.2}x", ns(2) / ns(3));
    println!();

    let upstream = common::start_upstream().await;
    let limits = format!("rpm = {HUGE}\ntpm = {HUGE}");
    let off = common::start_gateway(&gateway_toml(upstream, "", "")).await;
    let memory = common::start_gateway(&gateway_toml(upstream, &limits, "")).await;
    let client = common::client(p.concurrency);
    let mut gateways = vec![
        Gateway::new("limits-off", off),
        Gateway::new("limits-memory", memory),
    ];
    // Sanity: headers only where limits apply.
    let (_, headers, _) = exchange(&client, &gateways[0].url, false).await;
    assert!(
        !headers.contains_key(REMAINING_REQUESTS),
        "limits-off sent rate-limit headers"
    );
    let (_, headers, _) = exchange(&client, &gateways[1].url, false).await;
    assert!(
        headers.contains_key(REMAINING_REQUESTS),
        "limits-memory sent no rate-limit headers"
    );

    let prefix = format!("sluice-bench-{:016x}", fastrand::u64(..));
    let mut redis_connection = None;
    let redis_skipped = match common::probe_redis(&redis_url).await {
        Err(reason) => Some(format!("cannot reach {redis_url}: {reason}")),
        Ok(connection) => {
            redis_connection = Some(connection);
            let sections = format!(
                "[redis]\nurl = {}\nkey_prefix = {}\n",
                toml::Value::String(redis_url.clone()),
                toml::Value::String(prefix.clone()),
            );
            let addr = common::start_gateway(&gateway_toml(upstream, &limits, &sections)).await;
            let gateway = Gateway::new("limits-redis", addr);
            if wait_for_limit_headers(&client, &gateway.url).await {
                gateways.push(gateway);
                None
            } else {
                Some(format!(
                    "the gateway's Redis limiter did not connect to {redis_url} within 3 s"
                ))
            }
        }
    };

    let c = p.concurrency;
    println!(
        "2/3. gateways in front of an instant fake upstream: {}",
        p.plan()
    );
    common::run_rounds(&client, &mut gateways, common::BODY, &p).await;
    let (c1, loaded) = common::print_round_medians(&gateways, c);
    println!();
    common::print_ratios("limits on/off", c, (&c1, &loaded), 1, 0);
    match &redis_skipped {
        Some(reason) => println!("redis: measurement skipped: {reason}"),
        None => {
            println!(
                "redis vs in-memory limits, c1 p50 added latency: {:.1} us  (expected ~ one loopback round trip)",
                c1[2].p50_us - c1[1].p50_us
            );
            println!(
                "redis/in-memory limits, c{c} throughput: {:.3}",
                loaded[2].rps / loaded[1].rps
            );
        }
    }

    // The buckets expire on their own within seconds; remove them anyway.
    if let Some(mut connection) = redis_connection {
        let keys: Vec<String> = ["rpm", "tpm"]
            .iter()
            .map(|kind| format!("{{{prefix}}}:key:bench:{kind}"))
            .collect();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<i64>(&mut connection),
        )
        .await;
    }
}
