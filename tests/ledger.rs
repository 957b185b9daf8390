//! The usage ledger: one record per request, surviving restarts (SQLite and
//! PostgreSQL), totals through the admin API, and a 10,000-request burst.
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

use std::time::Duration;

use common::fake_upstream::{Behavior, chunk, done};
use common::gateway::{chat, deployment};
use common::postgres::{self, TestDatabase};
use common::{FakeUpstream, TestGateway};
use serde_json::Value;

const ADMIN: &str = "admin-token-0123456789";

fn config(upstream: &FakeUpstream, store: &str) -> String {
    format!(
        "[usage]\nstore = \"{}\"\nflush_interval = \"50ms\"\n[admin]\ntoken = \"{ADMIN}\"\n{}[[keys]]\nname = \"alpha\"\nkey = \"sk-alpha-000000\"\norg = \"eng\"\n[[keys]]\nname = \"beta\"\nkey = \"sk-beta-0000000\"\n",
        store,
        deployment("oa", upstream, "")
    )
}

async fn totals(gateway: &TestGateway, query: &str) -> Value {
    gateway
        .get_json(&format!("/admin/usage?{query}"), Some(ADMIN))
        .await
}

fn group<'a>(totals: &'a Value, name: &str) -> &'a Value {
    totals["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["group"] == name)
        .unwrap()
}

async fn traffic(gateway: &TestGateway) {
    for _ in 0..3 {
        let response = gateway
            .client
            .post(gateway.url("/v1/chat/completions"))
            .bearer_auth("sk-alpha-000000")
            .header("x-sluice-tag", "search")
            .json(&chat("gpt-4o"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        gateway
            .post(
                "/v1/chat/completions",
                Some("sk-beta-0000000"),
                &chat("gpt-4o")
            )
            .await
            .status(),
        200
    );
    assert_eq!(
        gateway
            .post(
                "/v1/chat/completions",
                Some("sk-beta-0000000"),
                &chat("nope")
            )
            .await
            .status(),
        404
    );
}

async fn restart_keeps_records(store: &str) {
    let upstream = FakeUpstream::start("oa").await;
    let mut first = TestGateway::start(&config(&upstream, store)).await;
    traffic(&first).await;
    // Graceful shutdown writes what is pending.
    first.shutdown();
    tokio::time::timeout(Duration::from_secs(15), first.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();

    let second = TestGateway::start(&config(&upstream, store)).await;
    let by_key = totals(&second, "group_by=key").await;
    let alpha = group(&by_key, "alpha");
    assert_eq!(alpha["requests"], 3);
    assert_eq!(alpha["prompt_tokens"], 15);
    assert_eq!(alpha["cached_tokens"], 9);
    let cost = alpha["cost_usd"].as_f64().unwrap();
    assert!((cost - 3.0 * 28.75e-6).abs() < 1e-12, "{cost}");
    // Requests refused before a model was resolved (the unknown model's 404)
    // are in the request metrics, not the ledger: beta has one record.
    assert_eq!(group(&by_key, "beta")["requests"], 1);
    assert_eq!(
        group(&totals(&second, "group_by=tag").await, "search")["requests"],
        3
    );
    assert_eq!(
        group(&totals(&second, "group_by=org").await, "eng")["requests"],
        3
    );
    assert_eq!(
        group(&totals(&second, "group_by=deployment").await, "oa")["requests"],
        4
    );
    // Date bounds, any weekday (2020-01-05 was a Sunday).
    let all = totals(&second, "group_by=deployment&from=2020-01-05&to=2100-01-01").await;
    assert_eq!(group(&all, "oa")["requests"], 4, "{all}");
    let none = totals(&second, "group_by=deployment&from=2099-12-31").await;
    assert_eq!(none["data"].as_array().map(Vec::len), Some(0), "{none}");
    let csv = second
        .client
        .get(second.url("/admin/usage?group_by=model&format=csv"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("group,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n"),
        "{csv}"
    );
    assert!(csv.contains("\"gpt-4o\",4,20,8,12,"), "{csv}");
}

#[tokio::test]
async fn sqlite_records_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("sluice-ledger-{}", fastrand::u64(..)));
    let upstream_config = format!("sqlite\"\ndata_dir = \"{}", dir.display());
    restart_keeps_records(&upstream_config).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_records_survive_a_restart() {
    let database = TestDatabase::create(postgres::PLAIN).await;
    // The journal is local even for PostgreSQL: keep it out of the checkout.
    let dir = std::env::temp_dir().join(format!("sluice-ledger-{}", fastrand::u64(..)));
    let store = format!("{}\"\ndata_dir = \"{}", database.url(), dir.display());
    restart_keeps_records(&store).await;
    database.drop_database().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A gateway with a SQLite ledger in a fresh directory (returned, to read
/// and remove), `server` lines in its `[server]` section and `deployment`
/// lines on its deployment.
async fn sqlite_gateway(
    upstream: &FakeUpstream,
    server: &str,
    deployment: &str,
) -> (TestGateway, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-ledger-{}", fastrand::u64(..)));
    let store = format!("sqlite\"\ndata_dir = \"{}", dir.display());
    let config = config(upstream, &store).replace(
        "models = [\"gpt-4o\"]\n",
        &format!("models = [\"gpt-4o\"]\n{deployment}"),
    );
    let gateway = TestGateway::start(&format!("[server]\n{server}\n{config}")).await;
    (gateway, dir)
}

/// One streamed chat call as `beta`: its status must be 200; its text.
async fn stream_text(gateway: &TestGateway) -> String {
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    let response = gateway
        .post("/v1/chat/completions", Some("sk-beta-0000000"), &body)
        .await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_stream_that_starts_after_a_keepalive_is_recorded_with_what_served_it() {
    let upstream = FakeUpstream::start("oa").await;
    let (gateway, dir) = sqlite_gateway(&upstream, "stream_keepalive = \"20ms\"", "").await;
    // The head comes after the first keep-alive: the client already has its
    // 200 before any deployment is known.
    let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n";
    upstream.push(Behavior::Late(
        Duration::from_millis(150),
        Box::new(Behavior::Stream {
            events: vec![chunk("hi"), usage.to_owned(), done()],
            interval: Duration::ZERO,
            gate: None,
        }),
    ));
    let text = stream_text(&gateway).await;
    assert!(text.starts_with(": keep-alive"), "{text}");
    assert!(
        text.contains("[DONE]") && !text.contains("\"usage\""),
        "{text}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let by_deployment = totals(&gateway, "group_by=deployment").await;
    let served = group(&by_deployment, "oa");
    assert_eq!(served["requests"], 1, "{by_deployment}");
    assert_eq!(served["prompt_tokens"], 9);
    let cost = served["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (9.0 * 2.5 + 3.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The one ledger row's prompt and completion tokens and whether they are
/// estimated; its cost is checked to be the prompt at gpt-4o's input price.
/// (OpenAI's chat rule for one "Say hello" user message: 3 + 1 ("user") +
/// 2 ("Say hello") + 3 for the reply = 9 prompt tokens.)
async fn only_row(dir: &std::path::Path) -> (i64, i64, bool) {
    // The first count loads the tokenizer (slow in a debug build): poll.
    let db = rusqlite::Connection::open(dir.join("usage.db")).unwrap();
    for _ in 0..200 {
        let row: Option<(i64, i64, bool, f64)> = db
            .query_row(
                "SELECT prompt_tokens, completion_tokens, estimated, cost_usd FROM sluice_usage",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .ok();
        if let Some((prompt, completion, estimated, cost)) = row {
            assert!((cost - prompt as f64 * 2.5 / 1e6).abs() < 1e-12, "{cost}");
            return (prompt, completion, estimated);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no ledger row");
}

#[tokio::test]
async fn a_stream_cut_short_is_recorded_with_an_estimated_prompt() {
    let upstream = FakeUpstream::start("oa").await;
    let (gateway, dir) = sqlite_gateway(&upstream, "", "").await;
    upstream.push(Behavior::BreakAfter(vec![chunk("hel")]));
    let text = stream_text(&gateway).await;
    assert!(
        text.contains("\"error\"") && !text.contains("[DONE]"),
        "{text}"
    );

    assert_eq!(only_row(&dir).await, (9, 0, true));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stream_that_times_out_after_a_keepalive_is_estimated_not_free() {
    let upstream = FakeUpstream::start("oa").await;
    upstream.set_default(Behavior::DelayHead(Duration::from_secs(30)));
    let (gateway, dir) = sqlite_gateway(
        &upstream,
        "stream_keepalive = \"20ms\"\nrequest_timeout = \"250ms\"",
        "timeout = \"100ms\"\n",
    )
    .await;
    let text = stream_text(&gateway).await;
    assert!(text.contains("upstream_timeout"), "{text}");
    // The upstream may have generated (and billed) the prompt it timed out on.
    assert_eq!(only_row(&dir).await, (9, 0, true));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn ten_thousand_requests_make_ten_thousand_records() {
    let dir = std::env::temp_dir().join(format!("sluice-ledger-{}", fastrand::u64(..)));
    let upstream = FakeUpstream::start("oa").await;
    let mut gateway = TestGateway::start(&config(
        &upstream,
        &format!("sqlite\"\ndata_dir = \"{}", dir.display()),
    ))
    .await;
    use futures_util::StreamExt;
    let ok = futures_util::stream::iter(0..10_000)
        .map(|_| async {
            gateway
                .post(
                    "/v1/chat/completions",
                    Some("sk-beta-0000000"),
                    &chat("gpt-4o"),
                )
                .await
                .status()
        })
        .buffer_unordered(64)
        .filter(|status| std::future::ready(*status == 200))
        .count()
        .await;
    assert_eq!(ok, 10_000);
    gateway.shutdown();
    tokio::time::timeout(Duration::from_secs(30), gateway.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();
    let rows: i64 = rusqlite::Connection::open(dir.join("usage.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sluice_usage", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 10_000);
    let _ = std::fs::remove_dir_all(dir);
}
