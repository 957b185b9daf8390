//! Streams in every legal spelling, end to end: an upstream that writes JSON
//! with spaces (Python's `json.dumps`), `data:` without its space, CRLF or
//! CR line ends, comments, or one event over several `data:` lines, cut at
//! random places on the wire, is metered (metrics, ledger, cost), has its
//! usage hidden from a client that did not ask for it and shown to one that
//! did, and is cached and replayed, for chat completions, completions and
//! the Responses API.
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

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::gateway::{chat, deployment};
use common::spelling::{self, LineEnd, Spelling};
use common::{Behavior, FakeUpstream, TestGateway};
use serde_json::{Value, json};

const KEY: &str = "sk-client-key-0001";

/// A gateway with a SQLite ledger in a fresh directory (returned, to read
/// and remove) and, with `cache`, the response cache.
async fn gateway(upstream: &FakeUpstream, cache: bool) -> (TestGateway, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-spellings-{}", fastrand::u64(..)));
    let cache = match cache {
        true => "[cache]\nenabled = true\ncache_all = true\n",
        false => "",
    };
    let config = format!(
        "[usage]\nstore = \"sqlite\"\ndata_dir = \"{}\"\nflush_interval = \"50ms\"\n{cache}{}[[keys]]\nname = \"app\"\nkey = \"{KEY}\"\n",
        dir.display(),
        deployment("oa", upstream, "")
    );
    (TestGateway::start(&config).await, dir)
}

fn spellings() -> Vec<(&'static str, Spelling)> {
    let base = Spelling::default();
    vec![
        ("spaced JSON", Spelling::spaced()),
        (
            "data: without space",
            Spelling {
                tight_data: true,
                ..base
            },
        ),
        (
            "CRLF",
            Spelling {
                line_end: LineEnd::CrLf,
                ..base
            },
        ),
        (
            "CR",
            Spelling {
                line_end: LineEnd::Cr,
                ..base
            },
        ),
        (
            "comments and multi-line data",
            Spelling {
                comments: true,
                split_data: true,
                ..base
            },
        ),
        (
            "all at once",
            Spelling {
                line_end: LineEnd::CrLf,
                tight_data: true,
                spaced_json: true,
                split_data: true,
                comments: true,
            },
        ),
    ]
}

async fn streamed(gateway: &TestGateway, path: &str, body: &Value) -> Vec<u8> {
    let response = gateway.post(path, Some(KEY), body).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

fn chat_request(include_usage: bool) -> Value {
    let mut body = chat("gpt-4o");
    body["stream"] = true.into();
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The value of a metric line with exactly these labels, 0 when absent.
fn metric(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn tokens(metrics: &str, kind: &str) -> f64 {
    metric(
        metrics,
        &format!(r#"sluice_tokens_total{{deployment="oa",model="gpt-4o",type="{kind}"}}"#),
    )
}

/// Every ledger row's prompt and completion tokens and whether they are
/// estimated, once there are `count`.
async fn ledger_rows(dir: &Path, count: usize) -> Vec<(i64, i64, bool)> {
    for _ in 0..200 {
        if let Ok(db) = rusqlite::Connection::open(dir.join("usage.db"))
            && let Ok(mut query) = db.prepare(
                "SELECT prompt_tokens, completion_tokens, estimated FROM sluice_usage ORDER BY at_ms",
            )
        {
            let rows: Vec<(i64, i64, bool)> = query
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap_or_default();
            if rows.len() >= count {
                return rows;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {count} ledger rows");
}

/// What a client iterating `chunk.choices[0]` (the README's Python loop)
/// needs: no chunk without choices.
fn every_chunk_has_a_choice(events: &[spelling::Parsed]) -> bool {
    events
        .iter()
        .filter(|(_, data)| data.is_object())
        .all(|(_, data)| data["choices"].as_array().is_some_and(|c| !c.is_empty()))
}

#[tokio::test]
async fn chat_usage_is_metered_hidden_and_shown_in_every_spelling() {
    let upstream = FakeUpstream::start("oa").await;
    let (gateway, dir) = gateway(&upstream, false).await;
    let mut rng = fastrand::Rng::with_seed(21);
    let mut expected_rows = Vec::new();
    for (seed, (name, spelled)) in spellings().into_iter().enumerate() {
        let (prompt, completion) = (100 + seed as u64, 7 + seed as u64);
        let events = spelling::chat_stream(&mut rng, prompt, completion);
        let canonical = spelling::parse_stream(events.concat().as_bytes());

        upstream.push(Behavior::spelled(&events, spelled, seed as u64));
        let hidden = streamed(&gateway, "/v1/chat/completions", &chat_request(false)).await;
        let hidden = spelling::parse_stream(&hidden);
        assert_eq!(
            hidden,
            spelling::without_usage(canonical.clone()),
            "{name}: the client that did not ask gets no usage"
        );
        assert!(every_chunk_has_a_choice(&hidden), "{name}: {hidden:?}");
        assert_eq!(
            upstream.last().body["stream_options"]["include_usage"],
            true
        );

        upstream.push(Behavior::spelled(&events, spelled, seed as u64 + 100));
        let shown = streamed(&gateway, "/v1/chat/completions", &chat_request(true)).await;
        assert_eq!(
            String::from_utf8_lossy(&shown),
            spelled.stream(&events).concat(),
            "{name}: the client that asked gets the upstream's bytes"
        );
        expected_rows.push((prompt as i64, completion as i64, false));
        expected_rows.push((prompt as i64, completion as i64, false));
    }

    let prompt: i64 = expected_rows.iter().map(|row| row.0).sum();
    let completion: i64 = expected_rows.iter().map(|row| row.1).sum();
    let metrics = gateway.metrics().await;
    assert_eq!(tokens(&metrics, "prompt"), prompt as f64, "{metrics}");
    assert_eq!(tokens(&metrics, "completion"), completion as f64);
    let mut rows = ledger_rows(&dir, expected_rows.len()).await;
    rows.sort_unstable();
    expected_rows.sort_unstable();
    assert_eq!(
        rows, expected_rows,
        "the ledger has the reported usage, not estimates"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A completions stream as an OpenAI-compatible server writes it with
/// `include_usage`.
fn completions_stream(prompt: u64, completion: u64) -> Vec<String> {
    let chunk = |choices: Value, usage: Value| {
        let value = json!({"id": "cmpl-s", "object": "text_completion", "created": 1,
            "model": "gpt-4o", "choices": choices, "usage": usage});
        format!("data: {value}\n\n")
    };
    vec![
        chunk(
            json!([{"text": "Hel", "index": 0, "logprobs": null, "finish_reason": null}]),
            Value::Null,
        ),
        chunk(
            json!([{"text": "lo", "index": 0, "logprobs": null, "finish_reason": "stop"}]),
            Value::Null,
        ),
        chunk(
            json!([]),
            json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}),
        ),
        "data: [DONE]\n\n".to_owned(),
    ]
}

#[tokio::test]
async fn completions_usage_is_metered_and_hidden_in_every_spelling() {
    let upstream = FakeUpstream::start("oa").await;
    let (gateway, dir) = gateway(&upstream, false).await;
    let request = json!({"model": "gpt-4o", "prompt": "Say hello", "stream": true});
    let all = spellings();
    for (seed, (name, spelled)) in all.iter().enumerate() {
        let events = completions_stream(20, 3);
        upstream.push(Behavior::spelled(&events, *spelled, seed as u64));
        let hidden = streamed(&gateway, "/v1/completions", &request).await;
        let canonical = spelling::parse_stream(events.concat().as_bytes());
        assert_eq!(
            spelling::parse_stream(&hidden),
            spelling::without_usage(canonical),
            "{name}"
        );
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        tokens(&metrics, "prompt"),
        20.0 * all.len() as f64,
        "{metrics}"
    );
    assert_eq!(tokens(&metrics, "completion"), 3.0 * all.len() as f64);
    let rows = ledger_rows(&dir, all.len()).await;
    assert!(rows.iter().all(|row| *row == (20, 3, false)), "{rows:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn responses_usage_is_read_from_response_completed_in_every_spelling() {
    let upstream = FakeUpstream::start("oa").await;
    let (gateway, dir) = gateway(&upstream, false).await;
    let request = json!({"model": "gpt-4o", "input": "Say hello", "stream": true});
    let mut rng = fastrand::Rng::with_seed(23);
    let all = spellings();
    for (seed, (name, spelled)) in all.iter().enumerate() {
        let events = spelling::responses_stream(&mut rng, 30, 4);
        upstream.push(Behavior::spelled(&events, *spelled, seed as u64));
        let relayed = streamed(&gateway, "/v1/responses", &request).await;
        assert_eq!(
            String::from_utf8_lossy(&relayed),
            spelled.stream(&events).concat(),
            "{name}: Responses streams pass byte for byte"
        );
    }
    let metrics = gateway.metrics().await;
    assert_eq!(
        tokens(&metrics, "prompt"),
        30.0 * all.len() as f64,
        "{metrics}"
    );
    assert_eq!(tokens(&metrics, "completion"), 4.0 * all.len() as f64);
    let rows = ledger_rows(&dir, all.len()).await;
    assert!(rows.iter().all(|row| *row == (30, 4, false)), "{rows:?}");
    let _ = std::fs::remove_dir_all(dir);
}

fn status_of(response: &reqwest::Response) -> String {
    response.headers()["x-sluice-cache"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn cached_call(gateway: &TestGateway, path: &str, body: &Value, status: &str) -> Vec<u8> {
    let response = gateway.post(path, Some(KEY), body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(&response), status, "{body}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn every_spelling_of_a_chat_stream_is_cached_and_replayed() {
    for (seed, (name, spelled)) in spellings().into_iter().enumerate() {
        let upstream = FakeUpstream::start("oa").await;
        let (gateway, dir) = gateway(&upstream, true).await;
        let mut rng = fastrand::Rng::with_seed(seed as u64);
        let events = spelling::chat_stream(&mut rng, 9, 2);
        let canonical = spelling::parse_stream(events.concat().as_bytes());
        upstream.push(Behavior::spelled(&events, spelled, seed as u64));
        let path = "/v1/chat/completions";

        let miss = cached_call(&gateway, path, &chat_request(true), "miss").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let hit = cached_call(&gateway, path, &chat_request(true), "hit").await;
        assert_eq!(
            spelling::parse_stream(&hit),
            spelling::parse_stream(&miss),
            "{name}: replayed as recorded"
        );
        if !spelled.comments {
            assert_eq!(hit, miss, "{name}: byte for byte");
        }
        let hidden = cached_call(&gateway, path, &chat_request(false), "hit").await;
        let hidden = spelling::parse_stream(&hidden);
        assert_eq!(hidden, spelling::without_usage(canonical), "{name}");
        assert!(every_chunk_has_a_choice(&hidden), "{name}");
        let mut plain = chat("gpt-4o");
        plain["stream"] = false.into();
        let rebuilt: Value =
            serde_json::from_slice(&cached_call(&gateway, path, &plain, "hit").await).unwrap();
        assert_eq!(rebuilt["usage"]["total_tokens"], 11, "{name}");
        assert_eq!(upstream.calls(), 1, "{name}");
        let metrics = gateway.metrics().await;
        assert!(
            metrics.contains("sluice_cache_tokens_saved_total 33"),
            "{name}: the recording's usage was read: {metrics}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn every_spelling_of_a_responses_stream_is_cached_and_replayed() {
    let request = json!({"model": "gpt-4o", "input": "Say hello", "stream": true});
    for (seed, (name, spelled)) in spellings().into_iter().enumerate() {
        let upstream = FakeUpstream::start("oa").await;
        let (gateway, dir) = gateway(&upstream, true).await;
        let mut rng = fastrand::Rng::with_seed(seed as u64);
        let events = spelling::responses_stream(&mut rng, 9, 2);
        upstream.push(Behavior::spelled(&events, spelled, seed as u64));
        let miss = cached_call(&gateway, "/v1/responses", &request, "miss").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let hit = cached_call(&gateway, "/v1/responses", &request, "hit").await;
        assert_eq!(
            spelling::parse_stream(&hit),
            spelling::parse_stream(&miss),
            "{name}"
        );
        assert_eq!(upstream.calls(), 1, "{name}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
