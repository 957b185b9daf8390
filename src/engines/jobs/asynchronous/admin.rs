//! The operator's view of asynchronous requests, mounted under `/admin`
//! behind the admin token: every key's jobs, and cancel. Refused (404) to
//! any caller but the operator, in case a route ever mounts it elsewhere.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value as Json;

use super::super::files::api::{Caller, page_limit, query_error};
use super::super::{Jobs, JobsError, json_answer, list_page};
use super::record::{self, Job};
use super::runner::error_answer;

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// A job as the operator sees it: the client's object, and whose it is,
/// what it replays and how it ended.
fn operator_view(job: &Job) -> Json {
    let mut view = job.to_json();
    view["owner"] = Json::from(job.owner.as_str());
    view["path"] = Json::from(job.path.as_str());
    view["response_status"] = job.answer.as_ref().map(|a| a.status).into();
    view["callback_state"] = job.callback_state.clone().into();
    view
}

fn operator_only(caller: &Caller, id: &str) -> Result<(), JobsError> {
    match caller.0.operator {
        true => Ok(()),
        false => Err(JobsError::not_found("async request", id)),
    }
}

/// `GET /admin/async?after=ID&limit=N`: every key's jobs not yet expired,
/// newest first.
pub async fn list(
    State(jobs): State<Arc<Jobs>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let listed = async {
        operator_only(&caller, "")?;
        let Query(query) = query.map_err(|rejection| query_error(&rejection))?;
        let limit = page_limit(query.limit, 20, 100)?;
        let (page, has_more) = record::page(&jobs.db, query.after, limit).await?;
        let data = page.iter().map(operator_view).collect();
        let first = page.first().map(|job| job.id.as_str());
        let last = page.last().map(|job| job.id.as_str());
        Ok(list_page(data, first, last, has_more))
    };
    json_answer(listed.await)
}

/// `POST /admin/async/{id}/cancel`: a job still queued or running ends
/// with a 409 `cancelled` answer, which its poller (and its callback) gets.
pub async fn cancel(
    State(jobs): State<Arc<Jobs>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let cancelled = async {
        operator_only(&caller, &id)?;
        let answer = error_answer(
            409,
            "This asynchronous request was cancelled by the gateway's operator.",
            "invalid_request_error",
            "cancelled",
        );
        let changed = record::cancel(&jobs.db, &id, &answer).await?;
        let job = record::load(&jobs.db, &id)
            .await?
            .ok_or_else(|| JobsError::not_found("async request", &id))?;
        if !changed {
            return Err(JobsError::Conflict(format!(
                "Cannot cancel an asynchronous request with status {}.",
                job.status.as_str()
            )));
        }
        Ok(operator_view(&job))
    };
    json_answer(cancelled.await)
}
