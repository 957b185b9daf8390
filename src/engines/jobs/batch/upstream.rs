//! A batch forwarded to a provider's Batch API (its model's deployment has
//! `batch = "upstream"`): the input goes up once, the provider's batch is
//! read every `[batch] upstream_poll_interval` (each read one claim of the
//! batch, by whichever replica's runner takes it; in between the batch is
//! paused and holds no runner), its counts and usage are mirrored, a local
//! cancel is passed on, and once the provider is done its output and error
//! files are copied down and the batch closes with the provider's status.
//!
//! The provider's batch id is recorded by compare-and-set under the lease
//! before anything else can forward the batch again, so a replica taking
//! it over resumes polling. A crash between upload and create only leaves
//! an unused file at the provider. Failures a retry may cure (no answer,
//! 429, 5xx) are tried again at the next poll.

use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::super::{Jobs, JobsError, unix_now};
use super::finalize;
use super::lease::{self, Lease, Step};
use super::record::{self, Batch, Counts, Status};
use super::upstream_files::{self, Closing};
use crate::upstream::Deployment;
use crate::upstream::batch_api::{ApiError, checked_id};

/// How long past its own window a batch the provider never closes (or
/// that cannot be reached) is polled before it fails here.
const GIVE_UP_AFTER_WINDOW: i64 = 3600;

pub async fn execute(jobs: &Arc<Jobs>, batch: &Batch, lease: &Lease) -> Result<Step, JobsError> {
    let name = batch.upstream_deployment.as_deref().unwrap_or_default();
    let Some(deployment) = jobs.internal.deployment(name) else {
        lease::fail(
            lease,
            batch,
            "upstream_deployment_gone",
            "The deployment this batch was forwarded to is no longer configured.",
        )
        .await?;
        return Ok(Step::Again);
    };
    let Some(upstream_id) = &batch.upstream_batch_id else {
        if batch.status == Status::Cancelling {
            finalize::close(jobs, batch, lease, Status::Cancelled).await?;
            return Ok(Step::Again);
        }
        if unix_now() >= batch.expires_at {
            // The provider never took it (each try uploads the input
            // again): stop trying once the window is over.
            let message = "The provider did not accept the batch within its completion window.";
            lease::fail(lease, batch, "upstream_unreachable", message).await?;
            return Ok(Step::Again);
        }
        return match forward(jobs, batch, lease, &deployment).await? {
            Forward::Created | Forward::Later => poll_later(jobs, batch, lease).await,
            Forward::Closed => Ok(Step::Again),
            Forward::Left => Ok(Step::Stop),
        };
    };
    match poll(jobs, batch, lease, &deployment, upstream_id).await? {
        Some(step) => Ok(step),
        None => poll_later(jobs, batch, lease).await,
    }
}

/// Leaves the batch until its next poll is due, when any replica's runner
/// claims it again: a forwarded batch holds no runner slot while the
/// provider works on it.
async fn poll_later(jobs: &Jobs, batch: &Batch, lease: &Lease) -> Result<Step, JobsError> {
    let until = unix_now() + jobs.batch.upstream_poll_interval.as_secs() as i64;
    let paused = lease
        .transition(batch.status, "paused_until = $1", vec![until.into()])
        .await?;
    // Not paused: cancelled meanwhile (handled at once), or the lease moved.
    if paused || !lease.renew().await? {
        return Ok(Step::Stop);
    }
    Ok(Step::Again)
}

/// What one attempt to forward a batch came to.
enum Forward {
    Created,
    /// Not now (the provider or the network failed); tried at the next poll.
    Later,
    /// The batch was closed here (the provider refused it, the key is gone).
    Closed,
    /// The lease was lost or the gateway is stopping.
    Left,
}

/// Uploads the input, creates the provider's batch and records its id.
async fn forward(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    deployment: &Deployment,
) -> Result<Forward, JobsError> {
    if jobs.identity_of(&batch.owner).is_none() {
        let message = "The key that made this batch no longer exists.";
        lease::fail(lease, batch, "key_revoked", message).await?;
        return Ok(Forward::Closed);
    }
    let uploaded = match upstream_files::upload_input(jobs, batch, lease, deployment).await? {
        None => return Ok(Forward::Left),
        Some(uploaded) => uploaded,
    };
    let file_id = match uploaded {
        Ok(id) => id,
        Err(error) => return refused_or_later(lease, batch, error).await,
    };
    let endpoint = if deployment.provider == crate::config::Provider::Azure {
        upstream_files::azure_path(&batch.endpoint)
    } else {
        &batch.endpoint
    };
    let mut ask = json!({
        "input_file_id": file_id,
        "endpoint": endpoint,
        "completion_window": "24h",
    });
    if let Some(metadata) = batch
        .metadata
        .as_deref()
        .and_then(|text| serde_json::from_str::<Json>(text).ok())
    {
        ask["metadata"] = metadata;
    }
    let created = jobs
        .upstream
        .batch_call(deployment, reqwest::Method::POST, "batches", Some(&ask))
        .await;
    let id = match created
        .and_then(|object| checked_id(object["id"].as_str().unwrap_or_default()).map(str::to_owned))
    {
        Ok(id) => id,
        Err(error) => return refused_or_later(lease, batch, error).await,
    };
    let recorded = jobs
        .db
        .execute(
            "UPDATE sluice_batches SET upstream_batch_id = $1 WHERE id = $2 AND runner = $3 \
             AND upstream_batch_id IS NULL AND status IN ('in_progress', 'cancelling')",
            vec![
                id.as_str().into(),
                batch.id.as_str().into(),
                jobs.replica.as_str().into(),
            ],
        )
        .await;
    let recorded = match recorded {
        Ok(changed) => Some(changed == 1),
        // A failed write may still have landed (a timeout can hide a
        // commit): the stored row says which, so a batch that is watched
        // is never called off by mistake.
        Err(error) => {
            tracing::warn!(batch = %batch.id, %error, "provider batch id not confirmed; reading it back");
            read_back(jobs, batch, &id).await
        }
    };
    match recorded {
        Some(true) => {}
        Some(false) => {
            // Nobody would ever poll it: the provider's batch is called off.
            send_cancel(jobs, deployment, &id).await;
            return Ok(Forward::Left);
        }
        None => {
            tracing::warn!(
                batch = %batch.id, upstream = %id,
                "store unreachable: the provider's batch is left running unrecorded, and may be forwarded again"
            );
            return Ok(Forward::Left);
        }
    }
    tracing::info!(batch = %batch.id, deployment = %deployment.name, upstream = %id, "batch forwarded");
    Ok(Forward::Created)
}

/// Whether the stored row holds `upstream_id`, read up to three times a
/// second apart; `None` when the store cannot tell.
async fn read_back(jobs: &Jobs, batch: &Batch, upstream_id: &str) -> Option<bool> {
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        if let Ok(stored) = record::load(&jobs.db, &batch.id).await {
            let recorded = stored.and_then(|stored| stored.upstream_batch_id);
            return Some(recorded.as_deref() == Some(upstream_id));
        }
    }
    None
}

/// A provider's refusal fails the batch with its message; anything else
/// waits for the next poll.
async fn refused_or_later(
    lease: &Lease,
    batch: &Batch,
    error: ApiError,
) -> Result<Forward, JobsError> {
    match error {
        ApiError::Refused(message) => {
            tracing::warn!(batch = %batch.id, %message, "provider refused the batch");
            lease::fail(lease, batch, "upstream_refused", &message).await?;
            Ok(Forward::Closed)
        }
        ApiError::Retry(message) => {
            tracing::warn!(batch = %batch.id, %message, "batch not forwarded yet; retrying");
            Ok(Forward::Later)
        }
    }
}

/// Passes a cancel on; `true` once the provider took it.
async fn send_cancel(jobs: &Jobs, deployment: &Deployment, upstream_id: &str) -> bool {
    let path = format!("batches/{upstream_id}/cancel");
    match jobs
        .upstream
        .batch_call(deployment, reqwest::Method::POST, &path, None)
        .await
    {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(upstream = %upstream_id, %error, "batch cancel not passed on yet");
            false
        }
    }
}

/// Reads the provider's batch once: mirrors its counts, and closes the
/// batch here when the provider's is over. `Some` when the run ends.
async fn poll(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    deployment: &Deployment,
    upstream_id: &str,
) -> Result<Option<Step>, JobsError> {
    let path = format!("batches/{upstream_id}");
    let object = match jobs
        .upstream
        .batch_call(deployment, reqwest::Method::GET, &path, None)
        .await
    {
        Ok(object) => object,
        Err(error) => {
            tracing::warn!(batch = %batch.id, %error, "forwarded batch not read; retrying");
            if unix_now() > batch.expires_at + GIVE_UP_AFTER_WINDOW {
                let message = format!("The provider's batch could not be read: {error}");
                lease::fail(lease, batch, "upstream_unreachable", &message).await?;
                return Ok(Some(Step::Again));
            }
            return Ok(None);
        }
    };
    let counts = mirrored_counts(&object);
    mirror(jobs, batch, &counts).await?;
    let Some(target) = terminal(&object) else {
        let running = matches!(
            object["status"].as_str(),
            Some("validating" | "in_progress")
        );
        if batch.status == Status::Cancelling && running {
            send_cancel(jobs, deployment, upstream_id).await;
        }
        return Ok(None);
    };
    let closing = (target, counts);
    match upstream_files::close(jobs, batch, lease, deployment, &object, closing).await? {
        Closing::Closed => Ok(Some(Step::Again)),
        Closing::Later(ApiError::Refused(message)) => {
            // Too large, or refused outright: another try would fetch it again.
            let message = format!("The provider's result files could not be copied: {message}");
            lease::fail(lease, batch, "upstream_results_unavailable", &message).await?;
            Ok(Some(Step::Again))
        }
        Closing::Later(error) => {
            tracing::warn!(batch = %batch.id, %error, "forwarded batch results not copied; retrying");
            Ok(None)
        }
        Closing::Left => Ok(Some(Step::Stop)),
    }
}

/// The provider's `request_counts` and `usage`.
fn mirrored_counts(object: &Json) -> Counts {
    let number = |value: &Json| value.as_i64().unwrap_or(0);
    let usage = &object["usage"];
    Counts {
        completed: number(&object["request_counts"]["completed"]),
        failed: number(&object["request_counts"]["failed"]),
        input_tokens: number(&usage["input_tokens"]),
        output_tokens: number(&usage["output_tokens"]),
        cached_tokens: number(&usage["input_tokens_details"]["cached_tokens"]),
    }
}

/// The status a finished provider batch closes this one with.
fn terminal(object: &Json) -> Option<Status> {
    match object["status"].as_str()? {
        "completed" => Some(Status::Completed),
        "failed" => Some(Status::Failed),
        "expired" => Some(Status::Expired),
        "cancelled" => Some(Status::Cancelled),
        _ => None,
    }
}

async fn mirror(jobs: &Jobs, batch: &Batch, counts: &Counts) -> Result<(), JobsError> {
    let mut values = counts.values().to_vec();
    values.extend([batch.id.as_str().into(), jobs.replica.as_str().into()]);
    jobs.db
        .execute(
            &format!(
                "UPDATE sluice_batches SET {} WHERE id = $6 AND runner = $7",
                Counts::assignments(1)
            ),
            values,
        )
        .await?;
    Ok(())
}
