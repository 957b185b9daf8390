//! Headroom-aware weights: two deployments of one model with equal weights
//! and different hidden request quotas per window, each reporting its
//! headroom as OpenAI does (`x-ratelimit-limit-requests`,
//! `-remaining-requests`, `-reset-requests`) and answering 429 past it.
//! Under the same open-loop load, traffic follows the headroom and the
//! upstreams' 429s fall against plain weights (`headroom = false`).
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

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::TestGateway;
use common::gateway::chat;
use serde_json::json;

const ADMIN: &str = "admin-token-headroom";
const WINDOW: Duration = Duration::from_millis(1000);
/// Long enough that several calls are in flight when a quota runs low:
/// each report arrives this late.
const LATENCY: Duration = Duration::from_millis(300);
const REFUSAL_LATENCY: Duration = Duration::from_millis(100);
/// Calls a second: 60% of the two quotas together (15 + 60), three times
/// the small one's share under equal weights.
const RATE: u32 = 45;

/// A request quota per fixed window, reported on every answer.
struct Quota {
    per_window: u64,
    state: Mutex<(Instant, u64, u64, u64)>,
}

impl Quota {
    async fn start(per_window: u64) -> (Arc<Self>, String) {
        let quota = Arc::new(Self {
            per_window,
            state: Mutex::new((Instant::now(), 0, 0, 0)),
        });
        let app = Router::new().fallback(serve).with_state(quota.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (quota, format!("http://{addr}"))
    }

    /// `(served, throttled)`.
    fn calls(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap();
        (state.2, state.3)
    }
}

async fn serve(State(quota): State<Arc<Quota>>) -> Response {
    let (allowed, remaining, reset) = {
        let mut state = quota.state.lock().unwrap();
        let now = Instant::now();
        if now.duration_since(state.0) >= WINDOW {
            state.0 = now;
            state.1 = 0;
        }
        let allowed = state.1 < quota.per_window;
        if allowed {
            state.1 += 1;
            state.2 += 1;
        } else {
            state.3 += 1;
        }
        let reset = WINDOW.saturating_sub(now.duration_since(state.0));
        (allowed, quota.per_window - state.1, reset.as_millis())
    };
    let headers = [
        ("x-ratelimit-limit-requests", quota.per_window.to_string()),
        ("x-ratelimit-remaining-requests", remaining.to_string()),
        ("x-ratelimit-reset-requests", format!("{reset}ms")),
        ("content-type", "application/json".to_owned()),
    ];
    if !allowed {
        // A refusal takes the network's round trip too.
        tokio::time::sleep(REFUSAL_LATENCY).await;
        let body = json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                     "param": null, "code": "rate_limit_exceeded"}});
        let mut response = (http::StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    tokio::time::sleep(LATENCY).await;
    let body = json!({
        "id": "chatcmpl-quota", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    });
    let mut response = body.to_string().into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// `rate` calls a second for `span`, each on its own task: client errors.
async fn open_loop(gateway: &TestGateway, rate: u32, span: Duration) -> u64 {
    let interval = Duration::from_secs(1) / rate;
    let until = Instant::now() + span;
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(interval);
    while Instant::now() < until {
        tick.tick().await;
        let (client, url) = (gateway.client.clone(), gateway.url("/v1/chat/completions"));
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(&url)
                .json(&chat("gpt-4o"))
                .send()
                .await
                .unwrap();
            u64::from(!response.status().is_success())
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += task.await.unwrap();
    }
    errors
}

/// One run: the upstreams' 429s, each one's calls (served, refused),
/// client errors.
async fn run(headroom: bool) -> (u64, [(u64, u64); 2], u64) {
    let (small, small_url) = Quota::start(15).await;
    let (large, large_url) = Quota::start(60).await;
    let gateway = TestGateway::start(&format!(
        "[auth]\nrequired = false\n[admin]\ntoken = \"{ADMIN}\"\n[retry]\nbase_delay = \"1ms\"\n\
         [models.gpt-4o]\nheadroom = {headroom}\n\
         [[deployments]]\nname = \"small\"\nprovider = \"openai\"\nbase_url = \"{small_url}\"\nmodels = [\"gpt-4o\"]\n\
         [[deployments]]\nname = \"large\"\nprovider = \"openai\"\nbase_url = \"{large_url}\"\nmodels = [\"gpt-4o\"]\n"
    ))
    .await;
    let errors = open_loop(&gateway, RATE, Duration::from_secs(8)).await;
    if headroom {
        let view = gateway.get_json("/admin/deployments", Some(ADMIN)).await;
        let shares: Vec<f64> = view["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["headroom"].as_f64().unwrap())
            .collect();
        assert!(shares.iter().all(|s| (0.02..=1.0).contains(s)), "{view}");
        let metrics = gateway.metrics().await;
        assert!(
            metrics.contains("sluice_deployment_headroom_percent{deployment=\"small\"}"),
            "{metrics}"
        );
    }
    let calls = [small.calls(), large.calls()];
    (calls[0].1 + calls[1].1, calls, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_reported_headroom_and_429s_fall() {
    let (plain_429, plain_served, plain_errors) = run(false).await;
    let (aware_429, aware_served, aware_errors) = run(true).await;
    eprintln!(
        "plain weights: {plain_429} upstream 429s, (served, refused) by (small, large) {plain_served:?}, {plain_errors} client errors; \
         headroom-aware: {aware_429} upstream 429s, served {aware_served:?}, {aware_errors} client errors"
    );
    assert!(
        aware_429 * 2 <= plain_429,
        "headroom-aware 429s {aware_429} against plain {plain_429}"
    );
    assert!(aware_errors <= plain_errors);
}
