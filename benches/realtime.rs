//! Realtime sessions through the gateway: `cargo bench --bench realtime`.
//!
//! A WebSocket echo upstream (the Realtime API's shape: JSON text events)
//! runs in this process; the same sessions are opened direct, through
//! Debian's nginx configured for WebSockets as an operator does
//! (`Upgrade`/`Connection` headers, HTTP/1.1, long read timeout) and through
//! Sluice, in rotating rounds, and medians of the rounds are reported:
//! - open: one session's handshake, one at a time;
//! - round trip: one event (1 KiB, an audio chunk's size order) and its
//!   echo, one at a time on one session;
//! - throughput: BENCH_CONCURRENCY sessions exchanging events back to back.
//!
//! Knobs (env): BENCH_REQUESTS (round trips and opens), BENCH_SECONDS,
//! BENCH_CONCURRENCY, BENCH_ROUNDS.
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
#[path = "../tests/common/process.rs"]
mod process;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{KEY, Stats, env_or, gateway_toml, start_gateway, stats};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Echoes every text event back, as fast as it comes.
async fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() && socket.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn open(url: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .expect("the session opens");
    socket
}

fn event() -> String {
    let audio = "A".repeat(1000);
    format!(r#"{{"type":"input_audio_buffer.append","audio":"{audio}"}}"#)
}

async fn exchange(socket: &mut Socket, event: &str) -> Duration {
    let started = Instant::now();
    socket.send(Message::text(event)).await.unwrap();
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(_))) => return started.elapsed(),
            Some(Ok(_)) => {}
            other => panic!("the session broke: {other:?}"),
        }
    }
}

async fn opens(url: &str, count: usize) -> Stats {
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let began = Instant::now();
        let mut socket = open(url).await;
        latencies.push(began.elapsed());
        let _ = socket.close(None).await;
    }
    stats(latencies, started.elapsed())
}

async fn round_trips(url: &str, count: usize) -> Stats {
    let mut socket = open(url).await;
    let event = event();
    for _ in 0..count / 10 {
        exchange(&mut socket, &event).await;
    }
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        latencies.push(exchange(&mut socket, &event).await);
    }
    let window = started.elapsed();
    let _ = socket.close(None).await;
    stats(latencies, window)
}

async fn throughput(url: &str, sessions: usize, seconds: Duration) -> Stats {
    let deadline = Instant::now() + seconds;
    let workers: Vec<_> = (0..sessions)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut socket = open(&url).await;
                let event = event();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    latencies.push(exchange(&mut socket, &event).await);
                }
                let _ = socket.close(None).await;
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    stats(latencies, started.elapsed())
}

#[tokio::main]
async fn main() {
    let requests = env_or("BENCH_REQUESTS", 2000usize);
    let seconds = Duration::from_secs_f64(env_or("BENCH_SECONDS", 3.0));
    let concurrency = env_or("BENCH_CONCURRENCY", 32usize);
    let rounds = env_or("BENCH_ROUNDS", 3usize);
    let upstream = start_echo().await;
    let gateway = start_gateway(&gateway_toml(
        upstream,
        "",
        "[realtime]\nmax_sessions_per_key = 1000",
    ))
    .await;
    let nginx = nginx::start(&nginx::operator_proxy_config(upstream, upstream)).await;
    let mut paths = vec![
        (
            "direct",
            format!("ws://{upstream}/v1/realtime?model=gpt-4o"),
        ),
        ("sluice", format!("ws://{gateway}/v1/realtime?model=gpt-4o")),
    ];
    match &nginx {
        Some(nginx) => paths.push((
            "nginx",
            format!("ws://{}/v1/realtime?model=gpt-4o", nginx.addr()),
        )),
        None => println!("nginx not found: run scripts/bench-deps.sh to compare with it"),
    }
    println!(
        "sluice realtime bench: {} opens, {} round trips, c{} {:.1}s, {} rounds, {} cpus; medians of rounds",
        requests / 4,
        requests,
        concurrency,
        seconds.as_secs_f64(),
        rounds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut results: Vec<(&str, &str, Vec<Stats>)> = Vec::new();
    let mut record = |mode: &'static str, path: &'static str, stats: Stats| match results
        .iter_mut()
        .find(|(m, p, _)| *m == mode && *p == path)
    {
        Some((_, _, rounds)) => rounds.push(stats),
        None => results.push((mode, path, vec![stats])),
    };
    for round in 0..rounds {
        // Each round starts with another path, so drift hits all alike.
        for offset in 0..paths.len() {
            let (name, url) = &paths[(round + offset) % paths.len()];
            record("open", name, opens(url, requests / 4).await);
            record("round-trip", name, round_trips(url, requests).await);
            record(
                "throughput",
                name,
                throughput(url, concurrency, seconds).await,
            );
        }
    }
    println!("mode          path           msg/s    p50_us    p99_us");
    let medians: Vec<(&str, &str, Stats)> = results
        .iter()
        .map(|(mode, path, rounds)| (*mode, *path, Stats::median_of(rounds)))
        .collect();
    for (mode, path, stats) in &medians {
        println!(
            "{mode:<13} {path:<10} {:>9.0} {:>9.0} {:>9.0}",
            stats.rps, stats.p50_us, stats.p99_us
        );
    }
    let get = |mode: &str, path: &str| {
        medians
            .iter()
            .find(|(m, p, _)| *m == mode && *p == path)
            .map(|(_, _, s)| *s)
    };
    println!();
    for mode in ["open", "round-trip", "throughput"] {
        let (Some(direct), Some(sluice)) = (get(mode, "direct"), get(mode, "sluice")) else {
            continue;
        };
        println!(
            "{mode}: sluice adds p50 {:.0} us; sluice/direct throughput {:.2}",
            sluice.p50_us - direct.p50_us,
            sluice.rps / direct.rps
        );
        if let Some(nginx) = get(mode, "nginx") {
            println!(
                "{mode}: nginx adds p50 {:.0} us; sluice/nginx throughput {:.2}",
                nginx.p50_us - direct.p50_us,
                sluice.rps / nginx.rps
            );
        }
    }
}
