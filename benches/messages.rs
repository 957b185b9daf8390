//! What the Anthropic translations cost: `cargo bench --bench messages`.
//!
//! Four paths in rotating rounds, whole answers then streams: the instant
//! fake OpenAI upstream directly; Sluice's `/v1/chat/completions` onto it;
//! Sluice's `/v1/messages` onto it (the Messages call translated to a chat
//! completion and the answer back); and `/v1/chat/completions` on a second
//! Sluice whose deployment is `provider = "anthropic"`, onto an instant fake
//! speaking Anthropic's JSON and SSE (the chat call written as Messages and
//! the answer back). Two more: that fake Anthropic upstream directly, and
//! the second Sluice's `/v1/messages` onto it (the Messages call relayed
//! as it came, the answer untranslated). One body serves both APIs (`max_tokens` and a string
//! `content` mean the same in each). Prints c1 p50 latency and cN
//! throughput, with the ratios: Messages against chat (the inbound
//! translation), the Anthropic deployment against the OpenAI one (the
//! outbound translation), the relay against the Anthropic fake directly,
//! and each against the upstream directly.
//!
//! Knobs (env): BENCH_REQUESTS, BENCH_WARMUP, BENCH_SECONDS,
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

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::CONTENT_TYPE;
use tokio::net::TcpListener;

use common::{Gateway, Params, gateway_toml, print_ratios, print_round_medians, run_rounds};

/// A chat completion request and a Messages request at once.
const BODY: &str =
    r#"{"model":"gpt-4o","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}"#;
const STREAM_BODY: &str = r#"{"model":"gpt-4o","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;

const MESSAGE: &str = r#"{"id":"msg_bench0000000000000001","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":9}}"#;

/// Anthropic's stream of the same answer, one word per delta.
fn anthropic_events() -> Vec<Bytes> {
    let event = |kind: &str, data: String| Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
    let mut events = vec![
        event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[],"stop_reason":null,"usage":{"input_tokens":9,"output_tokens":1}}}"#.to_owned(),
        ),
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
        ),
    ];
    for word in [
        "Hello!", " How", " can", " I", " help", " you", " today", "?",
    ] {
        let data = serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": word}});
        events.push(event("content_block_delta", data.to_string()));
    }
    events.push(event(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#.to_owned(),
    ));
    events.push(event(
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}"#.to_owned(),
    ));
    events.push(event(
        "message_stop",
        r#"{"type":"message_stop"}"#.to_owned(),
    ));
    events
}

async fn anthropic_answer(body: Bytes) -> Response {
    if body.windows(13).any(|w| w == br#""stream":true"#) {
        let events: Vec<Result<Bytes, Infallible>> =
            anthropic_events().into_iter().map(Ok).collect();
        let body = Body::from_stream(futures_util::stream::iter(events));
        ([(CONTENT_TYPE, "text/event-stream")], body).into_response()
    } else {
        ([(CONTENT_TYPE, "application/json")], MESSAGE).into_response()
    }
}

/// An instant fake of Anthropic's Messages API.
async fn start_anthropic_upstream() -> SocketAddr {
    let app = Router::new().route("/v1/messages", post(anthropic_answer));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sluice on an Anthropic deployment at `upstream`.
fn anthropic_toml(upstream: SocketAddr) -> String {
    gateway_toml(upstream, "", "")
        .replace("provider = \"openai\"", "provider = \"anthropic\"")
        .replace(
            &format!("http://{upstream}/v1"),
            &format!("http://{upstream}"),
        )
}

#[tokio::main]
async fn main() {
    let p = Params::from_env();
    let c = p.concurrency;
    let client = common::client(c);
    let openai = common::start_upstream().await;
    let anthropic = start_anthropic_upstream().await;
    let sluice = common::start_gateway(&gateway_toml(openai, "", "")).await;
    let claude = common::start_gateway(&anthropic_toml(anthropic)).await;

    for (what, body) in [("whole answers", BODY), ("streams", STREAM_BODY)] {
        let mut paths = vec![
            Gateway::new("direct", openai),
            Gateway::new("chat", sluice),
            Gateway::new("messages", sluice),
            Gateway::new("anthropic-dep", claude),
            Gateway::new("anthropic-direct", anthropic),
            Gateway::new("relay", claude),
        ];
        paths[2].url = format!("http://{sluice}/v1/messages");
        paths[4].url = format!("http://{anthropic}/v1/messages");
        paths[5].url = format!("http://{claude}/v1/messages");
        println!("{what}: {}", p.plan());
        run_rounds(&client, &mut paths, body, &p).await;
        let (c1, loaded) = print_round_medians(&paths, c);
        let medians = (&c1[..], &loaded[..]);
        print_ratios("messages/chat (inbound translation)", c, medians, 2, 1);
        print_ratios(
            "anthropic-dep/chat (outbound translation)",
            c,
            medians,
            3,
            1,
        );
        print_ratios("chat/direct", c, medians, 1, 0);
        print_ratios("messages/direct", c, medians, 2, 0);
        print_ratios("relay/anthropic-direct", c, medians, 5, 4);
        println!();
    }
}
