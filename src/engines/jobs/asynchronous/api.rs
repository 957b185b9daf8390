//! `GET /v1/async/{id}`: the job while it waits (`202`), then the answer it
//! got, as the synchronous call would have given it. Only the key that
//! asked sees it; anyone else, and everyone once it expired, gets 404.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::super::files::api::Caller;
use super::super::{Jobs, JobsError, unix_now};
use super::record::{self, Job, Status};

/// The header naming the job a stored answer belongs to.
pub const X_SLUICE_ASYNC_ID: &str = "x-sluice-async-id";

/// `GET /v1/async/{id}`.
pub async fn retrieve(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        record::load(&jobs.db, &id)
            .await?
            .filter(|job| *job.owner == *owner.key_id && job.expires_at > unix_now())
            .ok_or_else(|| JobsError::not_found("async request", &id))
    };
    match found.await {
        Ok(job) => answer(job),
        Err(error) => error.into_response(),
    }
}

fn answer(job: Job) -> Response {
    let id = HeaderValue::from_str(&job.id).ok();
    let mut response = match (job.status, job.answer.clone()) {
        (Status::Completed, Some(answer)) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, answer.body).into_response();
            if let Some(kind) = answer
                .content_type
                .and_then(|kind| HeaderValue::from_str(&kind).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, kind);
            }
            response
        }
        _ => pending(&job),
    };
    if let Some(id) = id {
        response.headers_mut().insert(X_SLUICE_ASYNC_ID, id);
    }
    response
}

/// `202` with the job, and when to look again.
fn pending(job: &Job) -> Response {
    let body = serde_json::to_vec(&job.to_json()).unwrap_or_default();
    let mut response = crate::vocab::error::json_response(StatusCode::ACCEPTED, body.into());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
