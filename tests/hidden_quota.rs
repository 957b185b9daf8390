//! No client error under a hidden concurrency quota, whatever its shape:
//! capacities 2 to 64, latencies 20 to 500 ms, 429s with no hint, a short
//! one or a long one, each loaded by three times its capacity in
//! closed-loop clients through `concurrency = "adaptive"` with the default
//! retry settings. Shapes are generated from a seed, so a failure names
//! its shape and replays.
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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestGateway;
use common::gateway::chat;
use common::hidden::{Hidden, Hint};

#[derive(Debug, Clone, Copy)]
struct Shape {
    capacity: usize,
    latency: Duration,
    hint: Hint,
    clients: usize,
}

impl Shape {
    fn random(rng: &mut fastrand::Rng) -> Self {
        let capacity = [2, 3, 5, 8, 13, 24, 40, 64][rng.usize(..8)];
        let latency = Duration::from_millis([20, 50, 100, 200, 500][rng.usize(..5)]);
        let hint = match rng.u8(..4) {
            0 => Hint::None,
            1 => Hint::Millis(rng.u64(5..50)),
            2 => Hint::Millis(rng.u64(100..1000)),
            _ => Hint::Seconds(rng.u64(1..3)),
        };
        Self {
            capacity,
            latency,
            hint,
            clients: capacity * rng.usize(2..4),
        }
    }
}

async fn gateway(base_url: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[auth]\nrequired = false\n\
         [[deployments]]\nname = \"hidden\"\nprovider = \"openai\"\nbase_url = \"{base_url}\"\n\
         models = [\"gpt-4o\"]\nconcurrency = \"adaptive\"\n"
    ))
    .await
}

/// `shape.clients` closed loops for `span`: answered calls and the
/// client errors by status and message.
async fn load(gateway: &TestGateway, shape: Shape, span: Duration) -> (u64, BTreeMap<String, u64>) {
    let until = Instant::now() + span;
    let tasks: Vec<_> = (0..shape.clients)
        .map(|_| class_loop(gateway, "standard", until))
        .collect();
    joined(tasks).await
}

/// The loops' answered calls and errors, summed.
async fn joined(
    tasks: Vec<tokio::task::JoinHandle<(u64, BTreeMap<String, u64>)>>,
) -> (u64, BTreeMap<String, u64>) {
    let (mut answered, mut errors) = (0, BTreeMap::new());
    for task in tasks {
        let (a, e) = task.await.unwrap();
        answered += a;
        for (key, count) in e {
            *errors.entry(key).or_insert(0) += count;
        }
    }
    (answered, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_error_under_any_shape_of_hidden_quota() {
    let seed: u64 = std::env::var("HIDDEN_QUOTA_SEED").map_or(27, |s| s.parse().unwrap());
    let rounds: usize = std::env::var("HIDDEN_QUOTA_SHAPES").map_or(4, |s| s.parse().unwrap());
    let mut rng = fastrand::Rng::with_seed(seed);
    // The independent check's shape, and a quota window's long hint on
    // a concurrency quota (which once took the only deployment out).
    let mut shapes = vec![
        Shape {
            capacity: 8,
            latency: Duration::from_millis(100),
            hint: Hint::Millis(200),
            clients: 24,
        },
        Shape {
            capacity: 16,
            latency: Duration::from_millis(20),
            hint: Hint::Seconds(2),
            clients: 48,
        },
    ];
    shapes.extend((0..rounds).map(|_| Shape::random(&mut rng)));
    let mut failed = Vec::new();
    for shape in shapes {
        let (hidden, base_url) = Hidden::start(shape.capacity, shape.latency, shape.hint).await;
        let gateway = gateway(&base_url).await;
        let span = match std::env::var("HIDDEN_QUOTA_SECONDS") {
            Ok(seconds) => Duration::from_secs(seconds.parse().unwrap()),
            Err(_) => (shape.latency * 40).clamp(Duration::from_secs(3), Duration::from_secs(6)),
        };
        let (answered, errors) = load(&gateway, shape, span).await;
        let (served, throttled) = hidden.calls();
        let total: u64 = errors.values().sum();
        eprintln!(
            "{shape:?}: {answered} answered, {total} client errors, upstream {served} served / {throttled} 429s; {errors:?}"
        );
        if total > 0 {
            failed.push((shape, errors));
        }
    }
    assert!(failed.is_empty(), "client errors: {failed:#?}");
}

/// A plain deployment (no adaptive limit) whose hidden quota a flood of
/// batch-class calls keeps full, as the batch runner does: realtime calls
/// through it still get answers, whatever the quota's size and speed,
/// when its 429s carry a hint of up to 1 s. (A 429 with no hint rests a
/// plain deployment for `default_throttle`, 10 s: realtime calls then
/// wait that long; an adaptive deployment is the answer to that shape.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_calls_ride_out_a_batch_flood_on_a_plain_deployment() {
    let shapes = [
        (16, 20, Hint::Millis(20)),
        (4, 100, Hint::Millis(50)),
        (32, 50, Hint::Millis(300)),
        (2, 200, Hint::Seconds(1)),
    ];
    let mut failed = Vec::new();
    for (capacity, latency, hint) in shapes {
        let latency = Duration::from_millis(latency);
        let (hidden, base_url) = Hidden::start(capacity, latency, hint).await;
        let gateway = TestGateway::start(&format!(
            "[auth]\nrequired = false\n\
             [[deployments]]\nname = \"hidden\"\nprovider = \"openai\"\nbase_url = \"{base_url}\"\n\
             models = [\"gpt-4o\"]\n"
        ))
        .await;
        let until = Instant::now() + Duration::from_secs(3);
        let batch: Vec<_> = (0..capacity * 2 + 8)
            .map(|_| class_loop(&gateway, "batch", until))
            .collect();
        let realtime: Vec<_> = (0..2)
            .map(|_| class_loop(&gateway, "realtime", until))
            .collect();
        let (answered, errors) = joined(realtime).await;
        let (batch_answered, _) = joined(batch).await;
        eprintln!(
            "capacity {capacity}, {latency:?}, {hint:?}: realtime {answered} answered, \
             errors {errors:?}; batch answered {batch_answered}; upstream (served, 429) {:?}",
            hidden.calls()
        );
        assert!(answered > 0);
        if !errors.is_empty() {
            failed.push((capacity, latency, hint, errors));
        }
    }
    assert!(failed.is_empty(), "realtime calls failed: {failed:?}");
}

/// Closed-loop calls of one priority class until `until`: answered, and
/// errors by status and message. A batch call refused goes back after 20 ms,
/// as the batch runner does after a hint.
fn class_loop(
    gateway: &TestGateway,
    class: &'static str,
    until: Instant,
) -> tokio::task::JoinHandle<(u64, BTreeMap<String, u64>)> {
    let (client, url) = (gateway.client.clone(), gateway.url("/v1/chat/completions"));
    tokio::spawn(async move {
        let (mut answered, mut failed) = (0u64, BTreeMap::<String, u64>::new());
        while Instant::now() < until {
            let response = client
                .post(&url)
                .header("x-sluice-priority", class)
                .json(&chat("gpt-4o"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                answered += 1;
            } else if class == "batch" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else {
                let message: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let message = message["error"]["message"].as_str().unwrap_or(&body);
                let key = format!(
                    "{status}: {}",
                    message.chars().take(120).collect::<String>()
                );
                *failed.entry(key).or_insert(0) += 1;
            }
        }
        (answered, failed)
    })
}
