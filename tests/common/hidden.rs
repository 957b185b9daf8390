//! An upstream with a hidden concurrency quota, as providers enforce
//! them: `capacity` calls at once, each taking `latency`; a call beyond
//! answers 429 with the configured hint (`retry-after-ms`, `retry-after`
//! or none). Capacity can change while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// How the 429 says when to come back.
#[derive(Clone, Copy, Debug)]
pub enum Hint {
    None,
    Millis(u64),
    Seconds(u64),
}

pub struct Hidden {
    pub capacity: AtomicUsize,
    latency: Duration,
    hint: Hint,
    in_flight: AtomicUsize,
    served: AtomicU64,
    throttled: AtomicU64,
}

impl Hidden {
    /// Serves on a free port; the base URL to configure.
    pub async fn start(capacity: usize, latency: Duration, hint: Hint) -> (Arc<Self>, String) {
        let hidden = Arc::new(Self {
            capacity: AtomicUsize::new(capacity),
            latency,
            hint,
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        });
        let app = Router::new().fallback(serve).with_state(hidden.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (hidden, format!("http://{addr}"))
    }

    /// `(served, throttled)` so far.
    pub fn calls(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::SeqCst),
            self.throttled.load(Ordering::SeqCst),
        )
    }
}

/// Leaves the in-flight count however the call ends.
struct InFlight(Arc<Hidden>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(State(hidden): State<Arc<Hidden>>) -> Response {
    let now = hidden.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(hidden.clone());
    if now > hidden.capacity.load(Ordering::SeqCst) {
        hidden.throttled.fetch_add(1, Ordering::SeqCst);
        let body = json!({"error": {"message": "too many requests", "type": "requests",
                                     "param": null, "code": "rate_limit_exceeded"}});
        let mut headers = vec![("content-type", "application/json".to_owned())];
        match hidden.hint {
            Hint::None => {}
            Hint::Millis(ms) => headers.push(("retry-after-ms", ms.to_string())),
            Hint::Seconds(s) => headers.push(("retry-after", s.to_string())),
        }
        let mut response = (http::StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
        for (name, value) in headers {
            response
                .headers_mut()
                .insert(name, http::HeaderValue::from_str(&value).unwrap());
        }
        return response;
    }
    tokio::time::sleep(hidden.latency).await;
    hidden.served.fetch_add(1, Ordering::SeqCst);
    let body = json!({
        "id": "chatcmpl-hidden", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    });
    ([("content-type", "application/json")], body.to_string()).into_response()
}
