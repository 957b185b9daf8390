//! The internal adapter's contract: a way into the call pipeline for work
//! Sluice does on a key's behalf (the semantic cache's embeddings, batch
//! lines, asynchronous requests). Such calls skip HTTP authentication but nothing else:
//! budgets, limits, admission, breakers, retries, cost and the ledger apply,
//! attributed to the key they serve and tagged (`SEMANTIC_CACHE_TAG`).
//!
//! A stage builds an `http::Request` for an API path, attaches the caller's
//! `Arc<Identity>` as an extension and calls `InternalCalls::call`; the
//! server runs it through the config snapshot in force at that moment.

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::BoxFuture;
use std::sync::Arc;

use crate::upstream::Deployment;
use crate::vocab::Identity;
use crate::vocab::Usage;

/// The `x-sluice-tag` of internal calls, in the ledger and the access log.
pub const SEMANTIC_CACHE_TAG: &str = "sluice-internal:semantic-cache";
/// The tag of batch lines (the batch id follows it).
pub const BATCH_TAG: &str = "sluice-internal:batch";
/// The tag of asynchronous requests.
pub const ASYNC_TAG: &str = "sluice-internal:async";

/// Work a provider ran on its own, with no call through the pipeline: a
/// batch forwarded to its Batch API, metered once when it closes.
#[derive(Debug, Clone)]
pub struct ForwardedUsage {
    /// The local batch id: the ledger record's request id and tag.
    pub batch_id: String,
    /// The stable id of the key that made the batch, and its org then.
    pub key_id: String,
    pub org: Option<String>,
    pub model: String,
    pub deployment: String,
    pub usage: Usage,
}

pub trait InternalCalls: Send + Sync + 'static {
    fn call(&self, request: Request) -> BoxFuture<'static, Response>;

    /// The key with stable id `key_id` in the config in force: work queued
    /// for a key runs with its current settings, and not at all once it is
    /// revoked.
    fn identity(&self, key_id: &str) -> Option<Arc<Identity>>;

    /// Whether the config in force serves `model` (a deployment's model or
    /// a virtual one): batch validation refuses lines naming another.
    fn serves(&self, model: &str) -> bool;

    /// Whether calls of a class above `batch` wait for a concurrency slot:
    /// batch lines then hold back instead of adding to the queue.
    fn busier_work_waiting(&self) -> bool;

    /// The deployment a batch for `model` is forwarded to: the first one,
    /// in the model's priority order, with `batch = "upstream"`; `None`
    /// runs the batch here, line by line.
    fn batch_deployment(&self, model: &str) -> Option<Arc<Deployment>>;

    /// The deployment named `name` in the config in force: a forwarded
    /// batch is polled where it was sent, whatever routing says now.
    fn deployment(&self, name: &str) -> Option<Arc<Deployment>>;

    /// Whether `model` is at degradation level 4 (maintenance): queued
    /// asynchronous jobs for it wait until it is back.
    fn maintenance(&self, model: &str) -> bool;

    /// Meters `work`: its usage at the model's price less `[batch]
    /// upstream_discount`, charged to the key's budgets, counted in the
    /// token and cost metrics, and one ledger record.
    fn meter_forwarded(&self, work: ForwardedUsage);
}
