//! A fake upstream with a concurrency quota the gateway is not told of: at
//! most `slots` chat calls in flight, each answered after `latency`; beyond
//! that a 429 at once with `retry-after-ms: 20`, as a provider's quota does.
//! Used by the batch and adaptive-concurrency benches.
#![allow(dead_code, reason = "not every bench reads every counter")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::CONTENT_TYPE;

use super::common::COMPLETION;

/// The quota and its counters.
pub struct Quota {
    pub slots: usize,
    pub latency: Duration,
    pub in_flight: AtomicUsize,
    pub answered: AtomicU64,
    pub throttled: AtomicU64,
}

impl Quota {
    pub fn new(slots: usize, latency: Duration) -> Arc<Self> {
        Arc::new(Self {
            slots,
            latency,
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    /// What the quota lets through: `slots` per `latency`.
    pub fn per_second(&self) -> f64 {
        self.slots as f64 / self.latency.as_secs_f64()
    }

    /// (answered, throttled) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
        )
    }

    /// Serves `/v1/chat/completions` on an ephemeral port.
    pub async fn serve(self: &Arc<Self>) -> SocketAddr {
        let app = Router::new()
            .route("/v1/chat/completions", post(completion))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}

async fn completion(State(quota): State<Arc<Quota>>) -> Response {
    let before = quota.in_flight.fetch_add(1, Ordering::SeqCst);
    if before >= quota.slots {
        quota.in_flight.fetch_sub(1, Ordering::SeqCst);
        quota.throttled.fetch_add(1, Ordering::Relaxed);
        return (
            http::StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json"), ("retry-after-ms", "20")],
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        )
            .into_response();
    }
    tokio::time::sleep(quota.latency).await;
    quota.in_flight.fetch_sub(1, Ordering::SeqCst);
    quota.answered.fetch_add(1, Ordering::Relaxed);
    ([(CONTENT_TYPE, "application/json")], COMPLETION).into_response()
}
