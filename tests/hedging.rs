//! Hedged requests: a model's preferred deployment has a slow tail (one
//! call in 40 starts 800 ms late), a backup is steady. With
//! `[models.NAME.hedge]` a call whose first token is later than the
//! model's recent p95 is sent to the backup too, and the first to start
//! streaming serves it; the other is cancelled. The client's p99 time to
//! first token falls, the extra upstream calls stay within the budget, and
//! every decision shows in the `x-sluice-hedge` header and the metrics.
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "a test fails by panicking, and reports what it measured"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TestGateway;
use common::tailed::{TAIL, TAIL_EVERY, Upstream};
use futures_util::StreamExt;
use serde_json::json;

const CALLS: usize = 400;
const CLIENTS: usize = 8;
const BUDGET_PERCENT: u64 = 10;

struct Run {
    /// Each call's time to its first body chunk, sorted.
    starts: Vec<Duration>,
    hedge_headers: Vec<String>,
    tailed_calls: u64,
    steady_calls: u64,
    cancelled: u64,
    metrics: String,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * (self.starts.len() - 1) as f64).round() as usize;
        self.starts[rank]
    }
}

/// What one run varies: hedging on, streamed calls, a broken backup.
#[derive(Clone, Copy)]
struct Shape {
    hedge: bool,
    streamed: bool,
    broken_backup: bool,
    /// Calls with `store: true`, which must never be sent twice.
    store: bool,
}

async fn run(shape: Shape) -> Run {
    let (tailed, tailed_url) = Upstream::start(true, false).await;
    let (steady, steady_url) = Upstream::start(false, shape.broken_backup).await;
    let hedge = shape.hedge;
    let hedging = if hedge {
        format!("[models.gpt-4o.hedge]\npercentile = 95\nbudget_percent = {BUDGET_PERCENT}\n")
    } else {
        String::new()
    };
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n{hedging}\
         [[deployments]]\nname = \"tailed\"\nprovider = \"openai\"\nbase_url = \"{tailed_url}\"\nmodels = [\"gpt-4o\"]\npriority = 0\n\
         [[deployments]]\nname = \"steady\"\nprovider = \"openai\"\nbase_url = \"{steady_url}\"\nmodels = [\"gpt-4o\"]\npriority = 1\n"
    ))
    .await;
    let gateway = Arc::new(gateway);
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (gateway, next) = (gateway.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < CALLS as u64 {
                seen.push(one_call(&gateway, shape).await);
            }
            seen
        }));
    }
    let mut starts = Vec::new();
    let mut hedge_headers = Vec::new();
    for client in clients {
        for (start, header) in client.await.unwrap() {
            starts.push(start);
            hedge_headers.extend(header);
        }
    }
    starts.sort();
    // Let the cancelled streams' drops reach the upstreams.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Run {
        starts,
        hedge_headers,
        tailed_calls: tailed.calls.load(Ordering::Relaxed),
        steady_calls: steady.calls.load(Ordering::Relaxed),
        cancelled: tailed.unfinished.load(Ordering::Relaxed)
            + steady.unfinished.load(Ordering::Relaxed),
        metrics: gateway.metrics().await,
    }
}

/// One call read to its end: its time to first chunk, and its
/// `x-sluice-hedge` header.
async fn one_call(gateway: &TestGateway, shape: Shape) -> (Duration, Option<String>) {
    let streamed = shape.streamed;
    let started = Instant::now();
    let mut body = common::gateway::chat("gpt-4o");
    body["stream"] = json!(streamed);
    if shape.store {
        body["store"] = json!(true);
    }
    let response = gateway
        .client
        .post(gateway.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get("x-sluice-hedge")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let start = started.elapsed();
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    if streamed {
        assert!(text.contains("[DONE]"), "{text}");
        assert_eq!(text.matches("chat.completion.chunk").count(), 3, "{text}");
    } else {
        assert!(text.contains("\"abb\""), "{text}");
    }
    (start, header)
}

fn report(plain: &Run, hedged: &Run) {
    let won = hedged.hedge_headers.iter().filter(|h| *h == "won").count();
    eprintln!(
        "p50 {:?} -> {:?}, p99 {:?} -> {:?}, max {:?} -> {:?}; \
         {} hedges for {CALLS} calls ({won} won, {} unfinished streams); plain: {} on the backup",
        plain.percentile(50.0),
        hedged.percentile(50.0),
        plain.percentile(99.0),
        hedged.percentile(99.0),
        plain.starts.last().unwrap(),
        hedged.starts.last().unwrap(),
        hedged.steady_calls,
        hedged.cancelled,
        plain.steady_calls,
    );
    assert_eq!(
        plain.steady_calls, 0,
        "without hedging the backup sees nothing"
    );
    assert!(
        plain.percentile(99.0) >= TAIL,
        "the tail shows without hedging"
    );
    assert!(
        hedged.steady_calls <= CALLS as u64 * BUDGET_PERCENT / 100,
        "{} extra calls against a budget of {BUDGET_PERCENT}% of {CALLS}",
        hedged.steady_calls
    );
    assert_eq!(
        hedged.tailed_calls, CALLS as u64,
        "every call tried the preferred first"
    );
}

fn counted(run: &Run, result: &str) -> bool {
    run.metrics.contains(&format!(
        "sluice_hedges_total{{model=\"gpt-4o\",result=\"{result}\"}}"
    ))
}

/// The same load without hedging, then with it, reported.
async fn compare(streamed: bool, broken_backup: bool) -> (Run, Run) {
    let shape = Shape {
        hedge: false,
        streamed,
        broken_backup,
        store: false,
    };
    let plain = run(shape).await;
    let hedged = run(Shape {
        hedge: true,
        ..shape
    })
    .await;
    report(&plain, &hedged);
    (plain, hedged)
}

async fn tail_is_cut(streamed: bool) {
    let (plain, hedged) = compare(streamed, false).await;
    let (plain_p99, hedged_p99) = (plain.percentile(99.0), hedged.percentile(99.0));
    assert!(
        hedged_p99 * 4 <= plain_p99,
        "hedging cuts the p99 start: {plain_p99:?} -> {hedged_p99:?}"
    );
    let won = hedged.hedge_headers.iter().filter(|h| *h == "won").count();
    assert!(
        won >= 5,
        "the tail's hedges win: {:?}",
        hedged.hedge_headers
    );
    if streamed {
        assert!(
            hedged.cancelled >= won as u64,
            "a losing leg is cancelled upstream"
        );
    }
    assert!(counted(&hedged, "hedge_won"), "{}", hedged.metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_streamed_tail_is_hedged_within_budget() {
    tail_is_cut(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_whole_answer_tail_is_hedged_within_budget() {
    tail_is_cut(false).await;
}

/// A hedge that fails costs the call nothing: the first leg serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hedge_leaves_the_first_leg_to_serve() {
    let (_, hedged) = compare(true, true).await;
    assert!(hedged.steady_calls >= 5, "the tail was hedged");
    // A hedge fired just before a normal start loses (`lost`); none wins.
    let failed = hedged.hedge_headers.iter().filter(|h| *h == "failed");
    assert!(failed.count() >= 5, "{:?}", hedged.hedge_headers);
    assert!(
        !hedged.hedge_headers.iter().any(|h| h == "won"),
        "{:?}",
        hedged.hedge_headers
    );
    assert!(counted(&hedged, "hedge_failed"), "{}", hedged.metrics);
}

/// A chat completion that stores what it makes is never sent twice: a
/// second object would be left upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_stores_is_never_hedged() {
    let hedged = run(Shape {
        hedge: true,
        streamed: false,
        broken_backup: false,
        store: true,
    })
    .await;
    assert_eq!(hedged.steady_calls, 0);
    assert!(
        hedged.hedge_headers.is_empty(),
        "{:?}",
        hedged.hedge_headers
    );
    assert!(hedged.percentile(99.0) >= TAIL, "the tail stays");
}

/// A hedge that loses while it waits for a slot on its deployment was
/// never sent: its quota charge is refunded when the call ends. The backup
/// allows two calls' estimates a minute; a call on another model holds its
/// only slot while the hedge queues, then two calls on that model at once
/// both fit only if the hedge's charge came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_dropped_while_queued_gives_back_its_charge() {
    let (tailed, tailed_url) = Upstream::start(true, false).await;
    let backup = common::FakeUpstream::start("backup").await;
    backup.set_default(common::Behavior::DelayHead(Duration::from_millis(1500)));
    let gateway = Arc::new(
        TestGateway::start(&format!(
            "[auth]\nrequired = false\n\
             [models.gpt-4o.hedge]\npercentile = 99\nbudget_percent = 2.6\n\
             [[deployments]]\nname = \"tailed\"\nprovider = \"openai\"\nbase_url = \"{tailed_url}\"\nmodels = [\"gpt-4o\"]\npriority = 0\n\
             [[deployments]]\nname = \"backup\"\nprovider = \"openai\"\nbase_url = \"{}\"\n\
             models = [\"gpt-4o\", \"other\"]\npriority = 1\nmax_concurrency = 1\ntpm = 1100\n",
            backup.base_url()
        ))
        .await,
    );
    let whole = Shape {
        hedge: true,
        streamed: false,
        broken_backup: false,
        store: false,
    };
    // Starts to learn from, and budget: the next call is the late one. A
    // budget of 2.6% holds its first hedge after 39 calls, so no earlier
    // call reaches the backup.
    while tailed.calls.load(Ordering::Relaxed) < TAIL_EVERY - 1 {
        one_call(&gateway, whole).await;
    }
    let other = |gateway: Arc<TestGateway>| {
        tokio::spawn(async move {
            gateway
                .post(
                    "/v1/chat/completions",
                    None,
                    &common::gateway::chat("other"),
                )
                .await
                .status()
        })
    };
    let holding = other(gateway.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (start, hedge) = one_call(&gateway, whole).await;
    assert!(start >= TAIL, "{start:?}");
    assert_eq!(
        hedge.as_deref(),
        Some("lost"),
        "the hedge waited for the slot"
    );
    assert_eq!(backup.calls(), 1, "only the call holding the slot was sent");
    assert_eq!(holding.await.unwrap(), 200);
    let both = [other(gateway.clone()), other(gateway.clone())];
    for call in both {
        assert_eq!(
            call.await.unwrap(),
            200,
            "the dropped hedge's estimate was refunded"
        );
    }
}
