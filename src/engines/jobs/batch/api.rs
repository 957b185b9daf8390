//! `/v1/batches`: create, retrieve, cancel and list, each limited to the
//! caller's own batches (or its org's, with `[batch] share_with_org`). A new
//! batch is recorded as `validating`; a runner takes it from there.

use std::sync::Arc;

use crate::infra::otel::LiveSpan;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::super::files::api::{Caller, expiry_seconds, page_limit, query_error};
use super::super::page_cursor;
use super::super::{Jobs, JobsError, Owner, json_answer, list_page, new_sorted_id, unix_now};
use super::record::{self, Batch, COLUMNS, Status};

/// The endpoints a batch may run.
pub const ENDPOINTS: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
];

/// The one completion window the API accepts.
const WINDOW: &str = "24h";
const WINDOW_SECONDS: i64 = 24 * 3600;

/// Fields this gateway does not know are ignored, as newer SDKs may send them.
#[derive(Deserialize)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    #[serde(default)]
    metadata: Option<Map<String, Json>>,
    #[serde(default)]
    output_expires_after: Option<ExpiresAfter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiresAfter {
    anchor: String,
    seconds: i64,
}

/// `POST /v1/batches`.
pub async fn create(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    trace: Option<axum::Extension<LiveSpan>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The lines' spans link to this call's (`sluice_batches.trace_parent`).
    let trace_parent = trace.map(|span| span.context().traceparent_text());
    let created = create_batch(&jobs, &owner, body, trace_parent).await;
    json_answer(created.map(|batch| batch.to_json(&record::Counts::default())))
}

async fn create_batch(
    jobs: &Jobs,
    owner: &Owner,
    body: Result<Bytes, BytesRejection>,
    trace_parent: Option<String>,
) -> Result<Batch, JobsError> {
    let body = body.map_err(|rejection| JobsError::invalid(rejection.body_text(), None))?;
    let asked: CreateBatch = serde_json::from_slice(&body).map_err(|error| {
        JobsError::invalid(
            format!(
                "The body is not a batch request: {}",
                crate::util::text::clip(&error.to_string())
            ),
            None,
        )
    })?;
    if !ENDPOINTS.contains(&asked.endpoint.as_str()) {
        return Err(JobsError::invalid(
            format!("endpoint must be one of {}.", ENDPOINTS.join(", ")),
            Some("endpoint"),
        ));
    }
    if asked.completion_window != WINDOW {
        return Err(JobsError::invalid(
            "completion_window must be \"24h\".",
            Some("completion_window"),
        ));
    }
    let metadata = asked.metadata.as_ref().map(check_metadata).transpose()?;
    let output_expires_after = asked
        .output_expires_after
        .map(|expiry| {
            if expiry.anchor != "created_at" {
                return Err(JobsError::invalid(
                    "output_expires_after.anchor must be \"created_at\".",
                    Some("output_expires_after"),
                ));
            }
            expiry_seconds(&expiry.seconds.to_string())
        })
        .transpose()?;
    let file = jobs
        .files
        .get(&asked.input_file_id, owner)
        .await?
        .ok_or_else(|| JobsError::not_found("file", &asked.input_file_id))?;
    if file.purpose != "batch" {
        return Err(JobsError::invalid(
            "The input file's purpose must be \"batch\".",
            Some("input_file_id"),
        ));
    }
    let limit = jobs.batch.max_open_batches_per_key;
    let _one_create_at_a_time = jobs.create_stripe(&owner.key_id).lock().await;
    if open_batches(jobs, owner).await? >= limit {
        return Err(JobsError::TooManyBatches(limit));
    }
    let now = unix_now();
    let batch = Batch {
        id: new_sorted_id("batch_"),
        owner: owner.key_id.to_string(),
        org: owner.org.as_deref().map(str::to_owned),
        status: Status::Validating,
        endpoint: asked.endpoint,
        input_file_id: file.id,
        completion_window: asked.completion_window,
        metadata,
        output_expires_after,
        model: None,
        total: 0,
        errors: None,
        output_file_id: None,
        error_file_id: None,
        created_at: now,
        in_progress_at: None,
        expires_at: now + WINDOW_SECONDS,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        expired_at: None,
        cancelling_at: None,
        cancelled_at: None,
        upstream_deployment: None,
        upstream_batch_id: None,
        trace_parent,
        recorded_counts: None,
    };
    insert(jobs, owner, &batch, limit).await?;
    super::runner::wake(jobs);
    Ok(batch)
}

/// Records `batch`, unless that takes `owner` past `limit` open batches.
async fn insert(jobs: &Jobs, owner: &Owner, batch: &Batch, limit: usize) -> Result<(), JobsError> {
    let placeholders: Vec<String> = (1..=batch.to_values().len())
        .map(|n| format!("${n}"))
        .collect();
    jobs.db
        .execute(
            &format!(
                "INSERT INTO sluice_batches ({COLUMNS}, lease_until, paused_until) VALUES ({}, 0, 0)",
                placeholders.join(", ")
            ),
            batch.to_values(),
        )
        .await?;
    // Creates on other replicas may race this one past the check before:
    // counted again with this one in, a batch past the limit is taken back
    // while no runner has claimed it. Racers across replicas may all be
    // refused; the limit holds.
    if open_batches(jobs, owner).await? > limit {
        let taken_back = jobs
            .db
            .execute(
                "DELETE FROM sluice_batches WHERE id = $1 AND runner IS NULL",
                vec![batch.id.as_str().into()],
            )
            .await?;
        if taken_back == 1 {
            return Err(JobsError::TooManyBatches(limit));
        }
    }
    Ok(())
}

/// Up to 16 pairs of strings, keys up to 64 characters, values up to 512.
fn check_metadata(metadata: &Map<String, Json>) -> Result<String, JobsError> {
    let bad = || {
        JobsError::invalid(
            "metadata holds at most 16 string values, keys up to 64 characters and values up to 512.",
            Some("metadata"),
        )
    };
    if metadata.len() > 16 {
        return Err(bad());
    }
    for (key, value) in metadata {
        match value {
            Json::String(value) if key.chars().count() <= 64 && value.chars().count() <= 512 => {}
            _ => return Err(bad()),
        }
    }
    serde_json::to_string(metadata).map_err(|_| bad())
}

/// The batch, if `owner` may see it.
async fn visible(jobs: &Jobs, id: &str, owner: &Owner) -> Result<Batch, JobsError> {
    record::load(&jobs.db, id)
        .await?
        .filter(|batch| batch.visible_to(owner, jobs.files.share_with_org()))
        .ok_or_else(|| JobsError::not_found("batch", id))
}

/// How many batches `owner` has open (`max_open_batches_per_key` bounds it).
async fn open_batches(jobs: &Jobs, owner: &Owner) -> Result<usize, JobsError> {
    let row = jobs
        .db
        .query_one(
            "SELECT COUNT(*) FROM sluice_batches WHERE owner = $1 \
             AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling')",
            vec![owner.key_id.as_ref().into()],
        )
        .await?;
    let open = row.and_then(|row| row.first().and_then(|count| count.int()));
    Ok(usize::try_from(open.unwrap_or(0)).unwrap_or(0))
}

/// The batch object with its counts and usage summed now.
async fn shown(jobs: &Jobs, batch: &Batch) -> Result<Json, JobsError> {
    if batch.recorded_counts.is_some() {
        // Closed or forwarded: nothing to sum (a list page of closed
        // batches reads no line results).
        return Ok(batch.to_json(&record::Counts::default()));
    }
    let counts = record::counts(&jobs.db, &batch.id).await?;
    Ok(batch.to_json(&counts))
}

/// `GET /v1/batches/{id}`.
pub async fn retrieve(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        let batch = visible(&jobs, &id, &owner).await?;
        shown(&jobs, &batch).await
    };
    json_answer(found.await)
}

/// `POST /v1/batches/{id}/cancel`: `cancelling` now; the runner lets lines
/// in flight finish, then marks it `cancelled`.
pub async fn cancel(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let cancelled = async {
        let batch = visible(&jobs, &id, &owner).await?;
        // The pause is lifted: a batch paused on a spent budget sends no
        // more lines once cancelling, and would otherwise stay `cancelling`
        // until the pause ran out (`[batch] budget_pause`).
        let changed = jobs
            .db
            .execute(
                "UPDATE sluice_batches SET status = 'cancelling', cancelling_at = $1, \
                 paused_until = 0 WHERE id = $2 AND status IN ('validating', 'in_progress')",
                vec![unix_now().into(), batch.id.as_str().into()],
            )
            .await?;
        let batch = visible(&jobs, &id, &owner).await?;
        if changed == 0 && batch.status != Status::Cancelling {
            return Err(JobsError::Conflict(format!(
                "Cannot cancel a batch with status {}.",
                batch.status.as_str()
            )));
        }
        super::runner::wake(&jobs);
        shown(&jobs, &batch).await
    };
    json_answer(cancelled.await)
}

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/batches`: newest first, `after` an id.
pub async fn list(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let listed = async {
        let Query(query) = query.map_err(|rejection| query_error(&rejection))?;
        let limit = page_limit(query.limit, 20, 100)?;
        let (batches, has_more) = page(&jobs, &owner, query.after, limit).await?;
        let mut data = Vec::with_capacity(batches.len());
        for batch in &batches {
            let mut shown = shown(&jobs, batch).await?;
            if owner.operator {
                // The admin API lists every key's batches: it says whose.
                shown["owner"] = Json::from(batch.owner.as_str());
            }
            data.push(shown);
        }
        let first = batches.first().map(|batch| batch.id.as_str());
        let last = batches.last().map(|batch| batch.id.as_str());
        Ok::<_, JobsError>(list_page(data, first, last, has_more))
    };
    json_answer(listed.await)
}

async fn page(
    jobs: &Jobs,
    owner: &Owner,
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<Batch>, bool), JobsError> {
    let cursor = page_cursor("sluice_batches", 4, after.is_some(), true);
    let visible = Owner::VISIBLE_ROWS;
    let mut params = owner.visibility_params(jobs.files.share_with_org());
    params.extend([after.unwrap_or_default().into(), (limit as i64 + 1).into()]);
    let rows = jobs
        .db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM sluice_batches WHERE {visible} {cursor} \
                 ORDER BY created_at DESC, id DESC LIMIT $5"
            ),
            params,
        )
        .await?;
    let mut batches: Vec<Batch> = rows.into_iter().filter_map(Batch::from_row).collect();
    let has_more = batches.len() > limit;
    batches.truncate(limit);
    Ok((batches, has_more))
}
