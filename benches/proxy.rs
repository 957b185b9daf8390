//! Gateway overhead benchmark: `cargo bench --bench proxy`.
//!
//! An instant fake OpenAI upstream and Sluice in front of it both run in this
//! process; the same load is sent direct and through Sluice, in alternating
//! rounds so machine noise hits both alike, and medians of the rounds are
//! reported. Knobs (env): BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS,
//! BENCH_WARMUP_SECONDS, BENCH_CONCURRENCY, BENCH_ROUNDS.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use http::header::CONTENT_TYPE;
use tokio::net::TcpListener;

const KEY: &str = "sk-bench-key-0001";
const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}],"stream":true}"#;
const COMPLETION: &str = r#"{"id":"chatcmpl-bench000000000000000001","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18},"service_tier":"default","system_fingerprint":"fp_bench"}"#;
const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// Run parameters; defaults give a ~1 minute run, env vars shrink it for CI.
struct Params {
    requests: usize,
    warmup: usize,
    seconds: Duration,
    warmup_seconds: Duration,
    concurrency: usize,
    rounds: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Params {
    fn from_env() -> Self {
        Self {
            requests: env_or("BENCH_REQUESTS", 2000usize).max(1),
            warmup: env_or("BENCH_WARMUP", 300),
            seconds: Duration::from_secs_f64(env_or("BENCH_SECONDS", 3.0f64).max(0.05)),
            warmup_seconds: Duration::from_secs_f64(
                env_or("BENCH_WARMUP_SECONDS", 0.5f64).max(0.0),
            ),
            concurrency: env_or("BENCH_CONCURRENCY", 32usize).max(1),
            rounds: env_or("BENCH_ROUNDS", 3usize).max(1),
        }
    }
}

/// Eight chat.completion.chunk events then `[DONE]`, as separate body chunks
/// so the gateway's per-chunk relay path is exercised.
fn sse_events() -> Vec<Bytes> {
    let words = ["Hello", "!", " How", " can", " I", " help", " you", "?"];
    let mut events: Vec<Bytes> = words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let finish = if i + 1 == words.len() { r#""stop""# } else { "null" };
            let event = format!(
                r#"data: {{"id":"chatcmpl-bench000000000000000001","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_bench","choices":[{{"index":0,"delta":{{"content":"{word}"}},"logprobs":null,"finish_reason":{finish}}}]}}"#
            );
            Bytes::from(event + "\n\n")
        })
        .collect();
    events.push(Bytes::from_static(SSE_DONE));
    events
}

/// The fake upstream answers at once; Sluice forwards the body bytes as sent,
/// so a substring test is enough to spot streaming requests.
async fn fake_completion(State(events): State<Arc<Vec<Bytes>>>, body: Bytes) -> Response {
    if body.windows(13).any(|w| w == br#""stream":true"#) {
        let chunks: Vec<Result<Bytes, Infallible>> = events.iter().cloned().map(Ok).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        ([(CONTENT_TYPE, "text/event-stream")], body).into_response()
    } else {
        ([(CONTENT_TYPE, "application/json")], COMPLETION).into_response()
    }
}

async fn start_upstream() -> SocketAddr {
    let app = Router::new()
        .route("/v1/chat/completions", post(fake_completion))
        .with_state(Arc::new(sse_events()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Same no-Nagle setting as Sluice, so small SSE writes are not delayed.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sluice in-process, built from config text like a user would write; no
/// tracing subscriber is installed, so access logging costs nothing here.
async fn start_sluice(upstream: SocketAddr) -> SocketAddr {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
required = true

[[keys]]
name = "bench"
key = "{KEY}"

[[deployments]]
name = "fake-upstream"
provider = "openai"
base_url = "http://{upstream}/v1"
api_key = "upstream-key"
models = ["gpt-4o"]
"#
    );
    let config = sluice::config::load_from_str(&toml, "bench", &HashMap::new()).expect("config");
    let gateway = sluice::server::Gateway::build(&config).expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    addr
}

/// One request, timed until the whole body (the full SSE stream) is read.
async fn request(client: &reqwest::Client, url: &str, stream: bool) -> (Duration, Bytes) {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(if stream { STREAM_BODY } else { BODY })
        .send()
        .await
        .expect("request failed");
    let status = response.status();
    let body = response.bytes().await.expect("reading body failed");
    assert!(status.is_success(), "status {status}: {body:?}");
    (started.elapsed(), body)
}

#[derive(Clone, Copy)]
struct Stats {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn stats(mut latencies: Vec<Duration>, window: Duration) -> Stats {
    latencies.sort_unstable();
    let pct = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies
            .get(rank - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Stats {
        rps: latencies.len() as f64 / window.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// Concurrency 1: warm-up, then a fixed count of back-to-back requests.
async fn sequential(client: &reqwest::Client, url: &str, stream: bool, p: &Params) -> Stats {
    for _ in 0..p.warmup {
        request(client, url, stream).await;
    }
    let mut latencies = Vec::with_capacity(p.requests);
    let started = Instant::now();
    for _ in 0..p.requests {
        latencies.push(request(client, url, stream).await.0);
    }
    stats(latencies, started.elapsed())
}

/// N tasks share one client until a deadline; only requests completing inside
/// the measured window (after warm-up) count.
async fn concurrent(client: &reqwest::Client, url: &str, stream: bool, p: &Params) -> Stats {
    let from = Instant::now() + p.warmup_seconds;
    let until = from + p.seconds;
    let url: Arc<str> = url.into();
    let tasks: Vec<_> = (0..p.concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let took = request(&client, &url, stream).await.0;
                    let done = Instant::now();
                    if done >= from && done < until {
                        latencies.push(took);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task failed"));
    }
    stats(all, p.seconds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let p = Params::from_env();
    let upstream = start_upstream().await;
    let gateway = start_sluice(upstream).await;
    let paths = [
        ("direct", format!("http://{upstream}/v1/chat/completions")),
        ("sluice", format!("http://{gateway}/v1/chat/completions")),
    ];
    let client = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(p.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

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
        let mut rounds: [Vec<Stats>; 2] = [Vec::new(), Vec::new()];
        for round in 0..p.rounds {
            // Alternate which path goes first so drift affects both alike.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
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
            let pick = |f: fn(&Stats) -> f64| median(rounds[i].iter().map(f).collect());
            let s = Stats {
                rps: pick(|s| s.rps),
                p50_us: pick(|s| s.p50_us),
                p99_us: pick(|s| s.p99_us),
            };
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
}
