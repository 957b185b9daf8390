//! The internal adapter's contract: a way into the call pipeline for work
//! Sluice does on a key's behalf (today the semantic cache's embeddings;
//! next, batch lines). Such calls skip HTTP authentication but nothing else:
//! budgets, limits, admission, breakers, retries, cost and the ledger apply,
//! attributed to the key they serve and tagged (`SEMANTIC_CACHE_TAG`).
//!
//! A stage builds an `http::Request` for an API path, attaches the caller's
//! `Arc<Identity>` as an extension and calls `InternalCalls::call`; the
//! server runs it through the config snapshot in force at that moment.

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::BoxFuture;

/// The `x-sluice-tag` of internal calls, in the ledger and the access log.
pub const SEMANTIC_CACHE_TAG: &str = "sluice-internal:semantic-cache";

pub trait InternalCalls: Send + Sync + 'static {
    fn call(&self, request: Request) -> BoxFuture<'static, Response>;
}
