//! A fake deployment with a slow tail, for hedged requests: most calls
//! start in 20 to 40 ms, one in `TAIL_EVERY` starts `TAIL` late. It counts
//! its calls and the streams dropped before their end (cancelled).
#![allow(
    clippy::disallowed_methods,
    reason = "tests and benches own their tasks"
)]
#![allow(clippy::unwrap_used, reason = "a fake stops at a broken setup")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::json;

/// One call in this many on a tailed deployment starts late.
pub const TAIL_EVERY: u64 = 40;
pub const TAIL: Duration = Duration::from_millis(800);

/// A deployment streaming three chunks (or answering whole); its first
/// after a delay of 20..=40 ms, or `TAIL` for one call in `TAIL_EVERY`
/// when it has a tail. A broken one answers 500 after 10 ms.
pub struct Upstream {
    tailed: bool,
    broken: bool,
    pub calls: AtomicU64,
    /// Streams dropped before their end: cancelled by the gateway.
    pub unfinished: Arc<AtomicU64>,
}

impl Upstream {
    pub async fn start(tailed: bool, broken: bool) -> (Arc<Self>, String) {
        let upstream = Arc::new(Self {
            tailed,
            broken,
            calls: AtomicU64::new(0),
            unfinished: Arc::new(AtomicU64::new(0)),
        });
        let app = Router::new().fallback(serve).with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // No delayed small writes: a chunk leaves when it is written.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (upstream, format!("http://{addr}"))
    }
}

/// Counts a stream that is dropped before its last chunk.
struct Unfinished(Arc<AtomicU64>, bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn serve(State(upstream): State<Arc<Upstream>>, request: Bytes) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&request).unwrap();
    let n = upstream.calls.fetch_add(1, Ordering::Relaxed);
    let first = if upstream.tailed && n % TAIL_EVERY == TAIL_EVERY - 1 {
        TAIL
    } else {
        Duration::from_millis(20 + (n * 7) % 21)
    };
    if upstream.broken {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let error = json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}});
        return json_response(http::StatusCode::INTERNAL_SERVER_ERROR, &error);
    }
    if request["stream"] != json!(true) {
        tokio::time::sleep(first).await;
        return json_response(
            http::StatusCode::OK,
            &json!({
                "id": "chatcmpl-h", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "abb"},
                             "finish_reason": "stop", "logprobs": null}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            }),
        );
    }
    let chunk = |content: &str| {
        let event = json!({"id": "chatcmpl-h", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
        Bytes::from(format!("data: {event}\n\n"))
    };
    let guard = Unfinished(upstream.unfinished.clone(), false);
    let body = futures_util::stream::unfold((0, guard), move |(step, mut guard)| {
        let item = match step {
            0 => Some((first, chunk("a"))),
            1 | 2 => Some((Duration::from_millis(5), chunk("b"))),
            3 => Some((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n"))),
            _ => None,
        };
        async move {
            let (wait, bytes) = item?;
            tokio::time::sleep(wait).await;
            guard.1 = step == 3;
            Some((Ok::<_, std::io::Error>(bytes), (step + 1, guard)))
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

fn json_response(status: http::StatusCode, body: &serde_json::Value) -> Response {
    let headers = [("content-type", "application/json")];
    (status, headers, body.to_string()).into_response()
}
