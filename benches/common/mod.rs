//! Shared by the benches: an instant fake OpenAI upstream (and one that
//! answers after a fixed delay), Sluice started in-process from config text,
//! and a reqwest load generator (fixed-count concurrency 1, deadline-bound
//! concurrency N) reporting req/s, p50 and p99.
//! Included with `#[path = "common/mod.rs"] mod common;`; not every bench
//! uses every item.
#![allow(
    dead_code,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "shared by benches that each use part of it; a bench prints its report and stops at a broken setup"
)]

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
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use tokio::net::TcpListener;

pub const KEY: &str = "sk-bench-key-0001";
pub const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#;
pub const STREAM_BODY: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}],"stream":true}"#;
pub const COMPLETION: &str = r#"{"id":"chatcmpl-bench000000000000000001","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18},"service_tier":"default","system_fingerprint":"fp_bench"}"#;
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// Run parameters; defaults give a ~1 minute run, env vars shrink it for CI.
pub struct Params {
    pub requests: usize,
    pub warmup: usize,
    pub seconds: Duration,
    pub warmup_seconds: Duration,
    pub concurrency: usize,
    pub rounds: usize,
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Params {
    /// How much each round sends, for the line above a table of rounds.
    pub fn plan(&self) -> String {
        format!(
            "c1 {} req (+{} warm-up), c{} {:.1}s (+{:.1}s warm-up), {} rounds, rotating order; medians of rounds",
            self.requests,
            self.warmup,
            self.concurrency,
            self.seconds.as_secs_f64(),
            self.warmup_seconds.as_secs_f64(),
            self.rounds,
        )
    }

    pub fn from_env() -> Self {
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
async fn fake_completion(State(events): State<Arc<[Bytes]>>, body: Bytes) -> Response {
    if body.windows(13).any(|w| w == br#""stream":true"#) {
        let chunks: Vec<Result<Bytes, Infallible>> = events.iter().cloned().map(Ok).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        ([(CONTENT_TYPE, "text/event-stream")], body).into_response()
    } else {
        ([(CONTENT_TYPE, "application/json")], COMPLETION).into_response()
    }
}

pub async fn start_upstream() -> SocketAddr {
    let app = Router::new()
        .route("/v1/chat/completions", post(fake_completion))
        .with_state(Arc::<[Bytes]>::from(sse_events()));
    serve_upstream(app).await
}

/// Like a model with a fixed service time: waits `delay`, then answers with
/// `COMPLETION` (never streams).
async fn delayed_completion(State(delay): State<Duration>) -> Response {
    tokio::time::sleep(delay).await;
    ([(CONTENT_TYPE, "application/json")], COMPLETION).into_response()
}

/// A fake upstream that answers every chat request after `delay`.
pub async fn start_delayed_upstream(delay: Duration) -> SocketAddr {
    let app = Router::new()
        .route("/v1/chat/completions", post(delayed_completion))
        .with_state(delay);
    serve_upstream(app).await
}

/// Serves a fake upstream on a free loopback port.
async fn serve_upstream(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Same no-Nagle setting as Sluice, so small SSE writes are not delayed.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Config text for a gateway in front of `upstream` with one key, `KEY`
/// named "bench". `key_extra` goes into that `[[keys]]` entry (e.g.
/// `rpm = 100`); `sections` is appended as is (e.g. a `[redis]` table).
pub fn gateway_toml(upstream: SocketAddr, key_extra: &str, sections: &str) -> String {
    gateway_toml_with(
        upstream,
        &TomlExtra {
            key: key_extra,
            sections,
            ..TomlExtra::default()
        },
    )
}

/// What `gateway_toml_with` adds to the config text; empty by default.
#[derive(Default)]
pub struct TomlExtra<'a> {
    /// Lines in `[server]`, e.g. `max_concurrency = 1000`.
    pub server: &'a str,
    /// Lines in the `[[keys]]` entry, e.g. `rpm = 100`.
    pub key: &'a str,
    /// Lines in the `[[deployments]]` entry, e.g. `max_concurrency = 4`.
    pub deployment: &'a str,
    /// Tables appended as is, e.g. `[queue]`.
    pub sections: &'a str,
}

/// Like `gateway_toml`, with lines for `[server]` and the deployment too.
pub fn gateway_toml_with(upstream: SocketAddr, extra: &TomlExtra) -> String {
    let TomlExtra {
        server,
        key,
        deployment,
        sections,
    } = extra;
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[auth]
required = true

[[keys]]
name = "bench"
key = "{KEY}"
{key}

[[deployments]]
name = "fake-upstream"
provider = "openai"
base_url = "http://{upstream}/v1"
api_key = "upstream-key"
models = ["gpt-4o"]
{deployment}

{sections}
"#
    )
}

/// Sluice in-process, built from config text like a user would write; no
/// tracing subscriber is installed, so access logging costs nothing here.
/// Without a `[usage]` section the ledger is off (benches measure it on
/// purpose, not by default).
pub async fn start_gateway(toml: &str) -> SocketAddr {
    let (gateway, listener, addr) = build_gateway(toml).await;
    tokio::spawn(gateway.serve(listener, std::future::pending::<()>()));
    addr
}

/// The gateway from config text (ledger off without `[usage]`, as in
/// `start_gateway`) and a free loopback listener for it.
async fn build_gateway(toml: &str) -> (sluice::server::Gateway, TcpListener, SocketAddr) {
    let mut env = HashMap::new();
    if !toml.contains("[usage]") {
        env.insert("SLUICE__USAGE__STORE".to_owned(), "none".to_owned());
    }
    let config = sluice::config::load_from_str(toml, "bench", &env).expect("config");
    let gateway = sluice::server::Gateway::build(&config).expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (gateway, listener, addr)
}

/// A gateway that can be shut down gracefully, from
/// `start_gateway_stoppable`.
pub struct StoppableGateway {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), sluice::server::StartError>>,
}

impl StoppableGateway {
    /// Stops accepting, lets in-flight requests finish and waits (at most
    /// `within`) for `Gateway::serve` to return, which is after the usage
    /// ledger has written its pending records. `false` on a timeout.
    pub async fn shutdown(self, within: Duration) -> bool {
        let _ = self.stop.send(());
        matches!(
            tokio::time::timeout(within, self.served).await,
            Ok(Ok(Ok(())))
        )
    }
}

/// Like `start_gateway`, keeping the means to shut it down gracefully.
pub async fn start_gateway_stoppable(toml: &str) -> StoppableGateway {
    let (gateway, listener, addr) = build_gateway(toml).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(gateway.serve(listener, shutdown));
    StoppableGateway { addr, stop, served }
}

/// The plain gateway of the proxy bench: one key, no limits.
pub async fn start_sluice(upstream: SocketAddr) -> SocketAddr {
    start_gateway(&gateway_toml(upstream, "", "")).await
}

/// The load generator's client: HTTP/1 keep-alive, no proxy, no Nagle.
pub fn client(concurrency: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The body `request`, `exchange`, `sequential` and `concurrent` send.
pub fn body_for(stream: bool) -> &'static str {
    if stream { STREAM_BODY } else { BODY }
}

/// Sends one request with `body` and checks the status, leaving the body
/// unread.
async fn send(client: &reqwest::Client, url: &str, body: &'static str) -> reqwest::Response {
    let response = client
        .post(url)
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("request failed");
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        panic!("status {status}: {body:?}");
    }
    response
}

/// One request, timed until the whole body (the full SSE stream) is read.
pub async fn request(client: &reqwest::Client, url: &str, stream: bool) -> (Duration, Bytes) {
    request_body(client, url, body_for(stream)).await
}

/// Like `request`, with a body of the caller's choosing.
pub async fn request_body(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
) -> (Duration, Bytes) {
    let started = Instant::now();
    let response = send(client, url, body).await;
    let body = response.bytes().await.expect("reading body failed");
    (started.elapsed(), body)
}

/// Like `request`, also returning the response headers.
pub async fn exchange(
    client: &reqwest::Client,
    url: &str,
    stream: bool,
) -> (Duration, HeaderMap, Bytes) {
    exchange_body(client, url, body_for(stream)).await
}

/// Like `exchange`, with a body of the caller's choosing.
pub async fn exchange_body(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
) -> (Duration, HeaderMap, Bytes) {
    let started = Instant::now();
    let response = send(client, url, body).await;
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("reading body failed");
    (started.elapsed(), headers, body)
}

/// Like `request_body` with extra request headers, but a refusal is an
/// answer, not a panic: the status (`None` on a transport error) and the time
/// until the whole body was read.
pub async fn request_status(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    headers: &[(&'static str, &'static str)],
) -> (Duration, Option<http::StatusCode>) {
    let started = Instant::now();
    let mut request = client
        .post(url)
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let status = match request.send().await {
        Ok(response) => {
            let status = response.status();
            response.bytes().await.ok().map(|_| status)
        }
        Err(_) => None,
    };
    (started.elapsed(), status)
}

#[derive(Clone, Copy)]
pub struct Stats {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Process CPU time (all threads: load generator, fake upstream and
    /// gateways alike) per answered request over the measured window; 0 where
    /// not measured. Unlike req/s it does not move when another tenant of a
    /// shared machine takes a core, so on-vs-off differences show through.
    pub cpu_us: f64,
}

impl Stats {
    /// Per-field medians over rounds.
    pub fn median_of(rounds: &[Stats]) -> Stats {
        let pick = |f: fn(&Stats) -> f64| median(rounds.iter().map(f).collect());
        Stats {
            rps: pick(|s| s.rps),
            p50_us: pick(|s| s.p50_us),
            p99_us: pick(|s| s.p99_us),
            cpu_us: pick(|s| s.cpu_us),
        }
    }
}

pub fn stats(mut latencies: Vec<Duration>, window: Duration) -> Stats {
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
        cpu_us: 0.0,
    }
}

/// This process's user + system CPU time, from `/proc/self/stat` (clock
/// ticks of 10 ms); `None` where that file does not exist.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Concurrency 1: warm-up, then a fixed count of back-to-back requests.
pub async fn sequential(client: &reqwest::Client, url: &str, stream: bool, p: &Params) -> Stats {
    sequential_body(client, url, body_for(stream), p).await
}

/// Like `sequential`, with a body of the caller's choosing.
pub async fn sequential_body(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    p: &Params,
) -> Stats {
    for _ in 0..p.warmup {
        request_body(client, url, body).await;
    }
    let mut latencies = Vec::with_capacity(p.requests);
    let started = Instant::now();
    for _ in 0..p.requests {
        latencies.push(request_body(client, url, body).await.0);
    }
    stats(latencies, started.elapsed())
}

/// N tasks share one client until a deadline; only requests completing inside
/// the measured window (after warm-up) count.
pub async fn concurrent(client: &reqwest::Client, url: &str, stream: bool, p: &Params) -> Stats {
    concurrent_body(client, url, body_for(stream), p).await
}

/// Like `concurrent`, with a body of the caller's choosing.
pub async fn concurrent_body(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    p: &Params,
) -> Stats {
    concurrent_body_counted(client, url, body, p).await.0
}

/// Like `concurrent_body`, also returning how many requests were answered in
/// all, warm-up and those finishing after the window included.
pub async fn concurrent_body_counted(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    p: &Params,
) -> (Stats, usize) {
    let from = Instant::now() + p.warmup_seconds;
    let until = from + p.seconds;
    let url: Arc<str> = url.into();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let start = process_cpu();
        tokio::time::sleep_until(until.into()).await;
        Some(process_cpu()?.saturating_sub(start?))
    });
    let tasks: Vec<_> = (0..p.concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut answered = 0;
                while Instant::now() < until {
                    let took = request_body(&client, &url, body).await.0;
                    answered += 1;
                    let done = Instant::now();
                    if done >= from && done < until {
                        latencies.push(took);
                    }
                }
                (latencies, answered)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut answered = 0;
    for task in tasks {
        let (latencies, n) = task.await.expect("load task failed");
        all.extend(latencies);
        answered += n;
    }
    let mut stats = stats(all, p.seconds);
    if let Ok(Some(cpu)) = cpu.await {
        stats.cpu_us = cpu.as_secs_f64() * 1e6 / (stats.rps * p.seconds.as_secs_f64()).max(1.0);
    }
    (stats, answered)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `BENCH_REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// Connects and PINGs within 3 s, so a missing Redis is reported, not waited on.
pub async fn probe_redis(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("bad URL: {e}"))?;
    let probe = async {
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(connection)
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
}

/// One sample from the gateway's `/metrics`, e.g.
/// `sluice_cache_requests_total{result="hit"}`; 0 if absent.
pub async fn metric(client: &reqwest::Client, gateway: SocketAddr, sample: &str) -> f64 {
    let text = client
        .get(format!("http://{gateway}/metrics"))
        .send()
        .await
        .expect("metrics request failed")
        .text()
        .await
        .expect("reading metrics failed");
    text.lines()
        .filter_map(|line| line.strip_prefix(sample))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One gateway (or the upstream itself) under comparison, with the stats
/// of each round.
pub struct Gateway {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub url: String,
    pub c1: Vec<Stats>,
    pub loaded: Vec<Stats>,
}

impl Gateway {
    pub fn new(name: &'static str, addr: SocketAddr) -> Self {
        Self {
            name,
            addr,
            url: chat_url(addr),
            c1: Vec::new(),
            loaded: Vec::new(),
        }
    }
}

pub fn chat_url(addr: SocketAddr) -> String {
    format!("http://{addr}/v1/chat/completions")
}

/// Prints each gateway's medians over its rounds, c1 then c`c`, and returns
/// them in the same order.
pub fn print_round_medians(gateways: &[Gateway], c: usize) -> (Vec<Stats>, Vec<Stats>) {
    println!(
        "{:<10}{:<16}{:>10}{:>10}{:>10}",
        "mode", "gateway", "rps", "p50_us", "p99_us"
    );
    let mut c1 = Vec::new();
    let mut loaded = Vec::new();
    for (mode, rounds_of, medians) in [
        (
            "c1".to_owned(),
            (|g: &Gateway| &g.c1) as fn(&Gateway) -> &Vec<Stats>,
            &mut c1,
        ),
        (format!("c{c}"), |g: &Gateway| &g.loaded, &mut loaded),
    ] {
        for gateway in gateways {
            let s = Stats::median_of(rounds_of(gateway));
            println!(
                "{mode:<10}{:<16}{:>10.0}{:>10.0}{:>10.0}",
                gateway.name, s.rps, s.p50_us, s.p99_us
            );
            medians.push(s);
        }
    }
    (c1, loaded)
}

/// `label, c1 p50 latency: ratio (difference)` and `label, cN throughput:
/// ratio`, for gateway `a` against gateway `b`, from `print_round_medians`.
pub fn print_ratios(label: &str, c: usize, (c1, loaded): (&[Stats], &[Stats]), a: usize, b: usize) {
    println!(
        "{label}, c1 p50 latency: {:.3}  ({:+.1} us)",
        c1[a].p50_us / c1[b].p50_us,
        c1[a].p50_us - c1[b].p50_us
    );
    println!(
        "{label}, c{c} throughput: {:.3}",
        loaded[a].rps / loaded[b].rps
    );
}

/// Runs `p.rounds` c1 rounds, then as many loaded rounds, over every
/// gateway, rotating which goes first; returns how many requests each one
/// answered (warm-ups included).
pub async fn run_rounds(
    client: &reqwest::Client,
    gateways: &mut [Gateway],
    body: &'static str,
    p: &Params,
) -> Vec<usize> {
    let n = gateways.len();
    let mut answered = vec![0; n];
    for loaded in [false, true] {
        for round in 0..p.rounds {
            for i in (0..n).map(|i| (i + round) % n) {
                let gateway = &mut gateways[i];
                if loaded {
                    let (s, count) = concurrent_body_counted(client, &gateway.url, body, p).await;
                    gateway.loaded.push(s);
                    answered[i] += count;
                } else {
                    gateway
                        .c1
                        .push(sequential_body(client, &gateway.url, body, p).await);
                    answered[i] += p.warmup + p.requests;
                }
            }
        }
    }
    answered
}
