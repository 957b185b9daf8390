//! `/admin/batches` and `/admin/async`: every key's batches and
//! asynchronous requests, and cancel. The handlers are the job API's own,
//! called as the operator (`Owner::operator`), who sees every key's rows.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::{get, post};

use crate::engines::jobs::asynchronous::admin as async_jobs;
use crate::engines::jobs::batch::api as batches;
use crate::engines::jobs::{Jobs, Owner};

pub fn routes(jobs: Arc<Jobs>) -> Router {
    Router::new()
        .route("/admin/batches", get(batches::list))
        .route("/admin/batches/{id}", get(batches::retrieve))
        .route("/admin/batches/{id}/cancel", post(batches::cancel))
        .route("/admin/async", get(async_jobs::list))
        .route("/admin/async/{id}/cancel", post(async_jobs::cancel))
        .with_state(jobs)
        .route_layer(from_fn(as_operator))
}

/// The caller the job handlers read: the operator, behind the admin token.
async fn as_operator(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Owner::operator());
    next.run(request).await
}
