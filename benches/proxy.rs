//! The proxy path against its practical limit: `cargo bench --bench proxy`.
//!
//! Every path is loaded by wrk (its own process) against the same upstream,
//! Debian's nginx answering a fixed chat completion, or a stream of 20
//! chunks, from memory:
//! - `direct`: wrk to the upstream;
//! - `nginx`: through nginx as an operator configures a reverse proxy (a
//!   worker per core, HTTP/1.1 to a keep-alive pool of 64, the default
//!   buffering, and `proxy_buffering off` for streams; the config is in
//!   `benches/common/nginx.rs` and `docs/performance.md`);
//! - `sluice`: through the release binary as its own process with the
//!   default config's layers: a required key, metrics, the access log (to
//!   a file, as a container's stderr would be collected), request ids and
//!   the SQLite ledger.
//!
//! Paths take turns within each round so machine noise hits all alike;
//! medians of rounds are reported, with what each proxy's processes spent
//! per request: CPU (from `/proc`, in the timed runs) and system calls by
//! kind (perf's syscall tracepoints, in an untimed run after them, since
//! tracing slows the traced process). Then the
//! allocations per request (this bench's counting allocator, the gateway
//! built in-process from the same config) and the ablation: the gateway
//! with each default layer that config can switch off switched off in turn.
//! `scripts/bench-deps.sh` installs nginx, wrk and perf. Knobs (env):
//! BENCH_SECONDS (each run, 5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (50);
//! BENCH_BASELINE names another build of `sluice` to run as a fourth path
//! (before and after a change, in one run).
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
#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/perf.rs"]
mod perf;
#[path = "../tests/common/process.rs"]
mod process;
#[path = "common/procstat.rs"]
mod procstat;
#[path = "common/wrk.rs"]
mod wrk;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use common::{COMPLETION, KEY, env_or};
use process::{SluiceProcess, TempDir, free_port};
use wrk::{Load, WrkStats};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-4o-stream","messages":[{"role":"user","content":"Say hello"}],"stream":true}"#;
/// Chunks in the upstream's stream, before its usage chunk and `[DONE]`.
const STREAM_CHUNKS: usize = 20;

struct Knobs {
    seconds: Duration,
    rounds: usize,
    connections: usize,
}

/// A stream of `STREAM_CHUNKS` content chunks, a usage chunk and `[DONE]`,
/// in OpenAI's shape with the optional fields left out: nginx takes a
/// `return` text of at most 4 KiB.
fn stream_answer() -> String {
    const HEAD: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":["#;
    let mut text = String::new();
    for index in 0..STREAM_CHUNKS {
        let finish = if index + 1 == STREAM_CHUNKS {
            "\"stop\""
        } else {
            "null"
        };
        text.push_str(&format!(
            "{HEAD}{{\"index\":0,\"delta\":{{\"content\":\"w{index} \"}},\"finish_reason\":{finish}}}]}}\n\n"
        ));
    }
    text.push_str(&format!(
        "{HEAD}],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29}}}}\n\n"
    ));
    text.push_str("data: [DONE]\n\n");
    text
}

/// What config can switch off of the default layers (request ids and
/// metrics have no switch), and OpenTelemetry tracing, which is off by
/// default, switched on at two sampling ratios.
#[derive(Clone, Copy, PartialEq)]
enum Without {
    Nothing,
    AccessLog,
    Ledger,
    KeyCheck,
    /// Tracing on, every call sampled.
    TracedAll,
    /// Tracing on, one call in ten sampled.
    TracedTenth,
    /// `[server] runtime = "shared"`: one work-stealing pool instead of a
    /// thread per core.
    SharedRuntime,
}

impl Without {
    fn label(self) -> &'static str {
        match self {
            Self::Nothing => "every default layer",
            Self::AccessLog => "without the access log",
            Self::Ledger => "without the SQLite ledger",
            Self::KeyCheck => "without the key check",
            Self::TracedAll => "with tracing, 100% sampled",
            Self::TracedTenth => "with tracing, 10% sampled",
            Self::SharedRuntime => "on the shared runtime",
        }
    }

    /// The `[otel]` table: an OTLP/HTTP collector that accepts everything.
    fn otel(self) -> String {
        let ratio = match self {
            Self::TracedAll => 1.0,
            Self::TracedTenth => 0.1,
            _ => return String::new(),
        };
        let collector = COLLECTOR.get().expect("the collector is started first");
        format!(
            "[otel]\nendpoint = \"http://{collector}\"\nsampler = \"traceidratio\"\nsampler_arg = {ratio}\n"
        )
    }
}

/// Where the traced gateways export: `collector` below.
static COLLECTOR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// An OTLP/HTTP collector that reads each export and answers 200, in this
/// process (its CPU is not the gateway's).
async fn collector() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move {
        std::hint::black_box(body.len());
        http::StatusCode::OK
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn sluice_config(
    listen: &str,
    data: &Path,
    upstreams: [SocketAddr; 2],
    without: Without,
) -> String {
    let [json, stream] = upstreams;
    let level = if without == Without::AccessLog {
        "warn"
    } else {
        "info"
    };
    let store = if without == Without::Ledger {
        "none"
    } else {
        "sqlite"
    };
    // Written only when not the default, so a baseline build that predates
    // the key (`BENCH_BASELINE`) reads the same config.
    let runtime = if without == Without::SharedRuntime {
        "runtime = \"shared\"\n"
    } else {
        ""
    };
    let (required, keys) = if without == Without::KeyCheck {
        ("false", String::new())
    } else {
        (
            "true",
            format!("[[keys]]\nname = \"bench\"\nkey = \"{KEY}\"\n"),
        )
    };
    format!(
        r#"[server]
listen = "{listen}"
{runtime}[auth]
required = {required}
[log]
level = "{level}"
[usage]
store = "{store}"
data_dir = "{data}"
[[deployments]]
name = "json"
provider = "openai"
base_url = "http://{json}/v1"
api_key = "upstream-key"
models = ["gpt-4o"]
[[deployments]]
name = "stream"
provider = "openai"
base_url = "http://{stream}/v1"
api_key = "upstream-key"
models = ["gpt-4o-stream"]
{keys}{otel}"#,
        data = data.display(),
        otel = without.otel(),
    )
}

async fn start_sluice(upstreams: [SocketAddr; 2], without: Without) -> SluiceProcess {
    start_binary(&process::binary(), upstreams, without).await
}

async fn start_binary(binary: &str, upstreams: [SocketAddr; 2], without: Without) -> SluiceProcess {
    let dir = TempDir::new("sluice-proxy-bench");
    let port = free_port();
    let config = sluice_config(
        &format!("127.0.0.1:{port}"),
        &dir.join("data"),
        upstreams,
        without,
    );
    let process = SluiceProcess::start_binary(binary, &dir.0, "bench", port, &config, &[]).await;
    process.owning(dir)
}

/// One measured run and what the proxy's processes spent in it.
#[derive(Clone, Copy, Default)]
struct Run {
    wrk: WrkStats,
    spent: procstat::Usage,
}

impl Run {
    fn cpu_us(&self) -> f64 {
        self.spent.cpu.as_micros() as f64 / self.wrk.requests.max(1) as f64
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The run whose throughput is the median of `runs`.
fn median_run(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.wrk.rps.total_cmp(&b.wrk.rps));
    let mut p50s: Vec<f64> = runs.iter().map(|run| run.wrk.p50_us).collect();
    let mut p99s: Vec<f64> = runs.iter().map(|run| run.wrk.p99_us).collect();
    let mut run = sorted[sorted.len() / 2];
    run.wrk.p50_us = median(&mut p50s);
    run.wrk.p99_us = median(&mut p99s);
    run
}

/// Runs `load` while reading `pid`'s CPU time (`None`: nothing to read).
fn measure(wrk: &str, dir: &Path, load: &Load, pid: Option<u32>) -> Run {
    let before = pid.map(procstat::read).unwrap_or_default();
    let stats = wrk::run(wrk, dir, load);
    let spent = pid.map(procstat::read).unwrap_or_default().since(before);
    Run { wrk: stats, spent }
}

/// The system calls per request of `pid`'s family under `load`, in all
/// then by kind, from a run of its own: tracing every call slows the
/// process traced, so the timed runs are not traced. Zeros without a
/// `pid` or where perf cannot count.
fn syscalls_per_request(wrk: &str, dir: &Path, load: &Load, pid: Option<u32>) -> Vec<f64> {
    let (counts, requests) = match pid {
        Some(pid) => {
            let counting = perf::count_syscalls(dir, &procstat::family(pid), load.duration);
            let stats = wrk::run(wrk, dir, load);
            let counts = counting.map(perf::Counting::finish).unwrap_or_default();
            (counts, stats.requests.max(1) as f64)
        }
        None => (perf::Syscalls::default(), 1.0),
    };
    std::iter::once(counts.total)
        .chain(counts.by_kind)
        .map(|count| count as f64 / requests)
        .collect()
}

fn headers(with_key: bool) -> Vec<(&'static str, &'static str)> {
    let mut headers = vec![("Content-Type", "application/json")];
    if with_key {
        headers.push(("Authorization", "Bearer sk-bench-key-0001"));
    }
    headers
}

#[tokio::main]
async fn main() {
    let knobs = Knobs {
        seconds: Duration::from_secs(env_or("BENCH_SECONDS", 5u64).max(1)),
        rounds: env_or("BENCH_ROUNDS", 3usize).max(1),
        connections: env_or("BENCH_CONNECTIONS", 50usize).max(2),
    };
    let Some(wrk) = wrk::installed() else {
        println!("wrk not found: run scripts/bench-deps.sh");
        return;
    };
    let stream = stream_answer();
    let Some(upstream) = nginx::start(&nginx::fixed_answers_config(COMPLETION, &stream)).await
    else {
        println!("nginx not found: run scripts/bench-deps.sh");
        return;
    };
    let upstreams = [upstream.addrs[0], upstream.addrs[1]];
    let proxy = nginx::start(&nginx::operator_proxy_config(upstreams[0], upstreams[1]))
        .await
        .expect("nginx as a proxy");
    let sluice = start_sluice(upstreams, Without::Nothing).await;
    sanity_check(&sluice.url).await;
    // Another build on the same load, to compare before and after a change.
    let baseline = match std::env::var("BENCH_BASELINE") {
        Ok(binary) => Some(start_binary(&binary, upstreams, Without::Nothing).await),
        Err(_) => None,
    };
    let mut paths = vec!["direct", "nginx", "sluice"];
    if baseline.is_some() {
        paths.push("baseline");
    }
    let scratch = TempDir::new("sluice-proxy-bench-wrk");

    println!(
        "sluice proxy bench: wrk, {:.1} s per run, {} rounds (paths take turns), c1 and c{}, {} cpus; medians of rounds",
        knobs.seconds.as_secs_f64(),
        knobs.rounds,
        knobs.connections,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    print!(
        "{:<12}{:<8}{:>8}{:>8}{:>8}{:>8}{:>9}",
        "mode", "path", "rps", "p50_us", "p99_us", "cpu_us", "syscalls"
    );
    for kind in perf::Syscalls::kinds() {
        print!("{kind:>8}");
    }
    println!("   (cpu and syscalls per request)");
    let mut table = Vec::new();
    for streamed in [false, true] {
        for connections in [1, knobs.connections] {
            let mode = format!(
                "{}-c{connections}",
                if streamed { "stream" } else { "json" }
            );
            let index = usize::from(streamed);
            let mut urls = vec![
                format!("http://{}/v1/chat/completions", upstreams[index]),
                format!("http://{}/v1/chat/completions", proxy.addrs[index]),
                format!("{}/v1/chat/completions", sluice.url),
            ];
            let mut pids = vec![None, Some(proxy.child.id()), Some(sluice.child.id())];
            if let Some(baseline) = &baseline {
                urls.push(format!("{}/v1/chat/completions", baseline.url));
                pids.push(Some(baseline.child.id()));
            }
            let headers = headers(true);
            let mut runs: Vec<Vec<Run>> = vec![Vec::new(); paths.len()];
            for round in 0..knobs.rounds {
                for turn in 0..paths.len() {
                    let path = (round + turn) % paths.len();
                    let load = Load {
                        url: &urls[path],
                        body: if streamed { STREAM_BODY } else { BODY },
                        headers: &headers,
                        connections,
                        duration: knobs.seconds,
                    };
                    runs[path].push(measure(wrk, &scratch, &load, pids[path]));
                }
            }
            let row: Vec<Run> = runs.iter().map(|runs| median_run(runs)).collect();
            for (path, run) in row.iter().enumerate() {
                let load = Load {
                    url: &urls[path],
                    body: if streamed { STREAM_BODY } else { BODY },
                    headers: &headers,
                    connections,
                    duration: Duration::from_secs(1),
                };
                let syscalls = syscalls_per_request(wrk, &scratch, &load, pids[path]);
                print!(
                    "{mode:<12}{:<8}{:>8.0}{:>8.0}{:>8.0}{:>8.1}",
                    paths[path],
                    run.wrk.rps,
                    run.wrk.p50_us,
                    run.wrk.p99_us,
                    run.cpu_us(),
                );
                for (column, per_request) in syscalls.iter().enumerate() {
                    // The first column (all calls) is a character wider.
                    let width = if column == 0 { 9 } else { 8 };
                    print!("{per_request:>width$.2}");
                }
                println!();
            }
            table.push((streamed, connections, row));
        }
    }
    print_ratios(&table, knobs.connections);
    print_profile(wrk, &scratch, &sluice, &knobs);
    drop((sluice, baseline));

    allocations(wrk, &scratch, upstreams, &knobs).await;
    ablation(wrk, &scratch, upstreams, &knobs).await;
}

/// Sluice relays the upstream's bytes unchanged in both modes.
async fn sanity_check(base: &str) {
    let client = reqwest::Client::new();
    for (body, streamed) in [(BODY, false), (STREAM_BODY, true)] {
        let response = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sluice answers");
        assert!(response.status().is_success(), "{}", response.status());
        let bytes = response.bytes().await.unwrap();
        if streamed {
            assert!(
                bytes.ends_with(b"data: [DONE]\n\n"),
                "stream did not end in [DONE]"
            );
        } else {
            assert_eq!(bytes, COMPLETION.as_bytes(), "non-streaming body differs");
        }
    }
}

fn print_ratios(table: &[(bool, usize, Vec<Run>)], connections: usize) {
    let find = |streamed: bool, conns: usize| {
        table
            .iter()
            .find(|(s, c, _)| *s == streamed && *c == conns)
            .map(|(_, _, row)| row)
            .unwrap()
    };
    println!();
    for (streamed, what) in [(false, "chat"), (true, "streamed chat (20 chunks)")] {
        let idle = find(streamed, 1);
        let loaded = find(streamed, connections);
        println!(
            "{what}: sluice/nginx throughput at c{connections} {:.2} (goal >= 0.60), p50 at c1 {:.2}x nginx's (goal <= 1.5); sluice/direct throughput {:.2}; added p50 at c1: sluice {:.0} us, nginx {:.0} us",
            loaded[2].wrk.rps / loaded[1].wrk.rps,
            idle[2].wrk.p50_us / idle[1].wrk.p50_us,
            loaded[2].wrk.rps / loaded[0].wrk.rps,
            idle[2].wrk.p50_us - idle[0].wrk.p50_us,
            idle[1].wrk.p50_us - idle[0].wrk.p50_us,
        );
        if let (Some(idle_base), Some(loaded_base)) = (idle.get(3), loaded.get(3)) {
            println!(
                "{what}: sluice/baseline throughput at c{connections} {:.2}, cpu per request {:.2}x, p50 at c1 {:.2}x",
                loaded[2].wrk.rps / loaded_base.wrk.rps,
                loaded[2].cpu_us() / loaded_base.cpu_us(),
                idle[2].wrk.p50_us / idle_base.wrk.p50_us,
            );
        }
    }
}

/// Where the gateway's CPU goes under load (chat at the loaded
/// concurrency): the functions with the most samples, self time.
fn print_profile(wrk: &str, scratch: &Path, sluice: &SluiceProcess, knobs: &Knobs) {
    let url = format!("{}/v1/chat/completions", sluice.url);
    let headers = headers(true);
    let load = Load {
        url: &url,
        body: BODY,
        headers: &headers,
        connections: knobs.connections,
        duration: knobs.seconds,
    };
    let Some(profiling) = perf::profile(scratch, sluice.child.id(), knobs.seconds) else {
        println!("(no profile: perf is not installed or not permitted)");
        return;
    };
    let _ = wrk::run(wrk, scratch, &load);
    println!();
    println!(
        "profile (chat, c{}): sluice's top functions by CPU samples, self time",
        knobs.connections
    );
    for (percent, symbol) in profiling.finish(25) {
        println!("  {percent:>6.2}%  {symbol}");
    }
}

/// Allocations per request in the gateway: the same config built in this
/// process (whose allocator counts), with the access log written to a file
/// as the binary writes it to stderr, loaded by wrk.
async fn allocations(wrk: &str, scratch: &Path, upstreams: [SocketAddr; 2], knobs: &Knobs) {
    let data = TempDir::new("sluice-proxy-bench-alloc");
    let log = std::fs::File::create(data.join("access.log")).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::sync::Arc::new(log))
        .with_ansi(false)
        .try_init();
    let toml = sluice_config(
        "127.0.0.1:0",
        &data.join("data"),
        upstreams,
        Without::Nothing,
    );
    let gateway = common::start_gateway(&toml).await;
    println!();
    println!(
        "allocations per request (gateway in-process, c{})",
        knobs.connections
    );
    for (streamed, body) in [(false, BODY), (true, STREAM_BODY)] {
        let url = format!("http://{gateway}/v1/chat/completions");
        let headers = headers(true);
        let load = Load {
            url: &url,
            body,
            headers: &headers,
            connections: knobs.connections,
            duration: knobs.seconds,
        };
        // Warm the pools and caches first, then count.
        let _ = tokio::task::block_in_place(|| wrk::run(wrk, scratch, &load));
        let region = Region::new(GLOBAL);
        let stats = tokio::task::block_in_place(|| wrk::run(wrk, scratch, &load));
        let counted = region.change();
        let n = stats.requests.max(1) as f64;
        println!(
            "  {:<8} {:>8.1} allocations, {:>9.0} bytes allocated per request ({} requests)",
            if streamed { "stream" } else { "json" },
            (counted.allocations + counted.reallocations) as f64 / n,
            counted.bytes_allocated as f64 / n,
            stats.requests,
        );
    }
}

/// The gateway with each switchable default layer off in turn, non-streamed
/// chat at the loaded concurrency: what each costs in CPU per request.
async fn ablation(wrk: &str, scratch: &Path, upstreams: [SocketAddr; 2], knobs: &Knobs) {
    let variants = [
        Without::Nothing,
        Without::AccessLog,
        Without::Ledger,
        Without::KeyCheck,
        Without::TracedAll,
        Without::TracedTenth,
        Without::SharedRuntime,
    ];
    let _ = COLLECTOR.set(collector().await);
    let mut gateways = Vec::new();
    for without in variants {
        gateways.push(start_sluice(upstreams, without).await);
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    for round in 0..knobs.rounds {
        for turn in 0..variants.len() {
            let index = (round + turn) % variants.len();
            let url = format!("{}/v1/chat/completions", gateways[index].url);
            let headers = headers(variants[index] != Without::KeyCheck);
            let load = Load {
                url: &url,
                body: BODY,
                headers: &headers,
                connections: knobs.connections,
                duration: knobs.seconds,
            };
            let pid = gateways[index].child.id();
            runs[index].push(measure(wrk, scratch, &load, Some(pid)));
        }
    }
    println!();
    println!(
        "ablation (chat, c{}): each switchable default layer off in turn, then tracing on, then the shared runtime",
        knobs.connections
    );
    println!(
        "{:<28}{:>10}{:>12}{:>14}",
        "gateway", "rps", "cpu_us/req", "layer_cpu_us"
    );
    let all_on = median_run(&runs[0]).cpu_us();
    for (without, runs) in variants.iter().zip(&runs) {
        let run = median_run(runs);
        let cpu = run.cpu_us();
        // A layer's cost: what switching it off saved, or what switching
        // tracing (or the shared runtime) on added.
        let cost = match without {
            Without::Nothing => "-".to_owned(),
            Without::TracedAll | Without::TracedTenth | Without::SharedRuntime => {
                format!("{:.1}", cpu - all_on)
            }
            _ => format!("{:.1}", all_on - cpu),
        };
        println!(
            "{:<28}{:>10.0}{:>12.1}{:>14}",
            without.label(),
            run.wrk.rps,
            cpu,
            cost
        );
    }
}
