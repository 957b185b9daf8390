//! The batch runner of one replica: claims open batches with a lease,
//! keeps the lease alive while it works, and drives each batch through
//! `validating → in_progress → finalizing → completed` (or `failed`,
//! `expired`, `cancelling → cancelled`). A batch whose model a deployment
//! with `batch = "upstream"` serves is forwarded there (`upstream`) instead
//! of run line by line (`run`).
//!
//! A lease is a compare-and-set on `(runner, lease_until)`: a batch whose
//! runner stopped heart-beating (a crash, `kill -9`, a lost network) is
//! claimed by the next replica that polls after the lease ran out, and
//! resumes from its recorded lines.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::super::{Jobs, JobsError, unix_now, unix_now_ms};
use super::finalize;
pub use super::lease::{Lease, Step, fail};
use super::record::{self, Batch, Status};
use super::run;
use super::upstream;
use super::validate;

/// Batches one replica runs at once; their lines share `max_concurrency`.
const MAX_ACTIVE_BATCHES: usize = 4;

/// Wakes this replica's runner (a batch was created or cancelled here).
pub fn wake(jobs: &Jobs) {
    jobs.batch_wake.notify_one();
}

pub fn start(jobs: &Arc<Jobs>) {
    let jobs = jobs.clone();
    let active = Arc::new(tokio::sync::Semaphore::new(MAX_ACTIVE_BATCHES));
    jobs.tasks.clone().spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(jobs.batch.poll_interval) => {}
                () = jobs.batch_wake.notified() => {}
                () = jobs.tasks.stopping() => return,
            }
            while let Ok(slot) = active.clone().try_acquire_owned() {
                match claim_next(&jobs).await {
                    Ok(Some(batch)) => spawn_run(&jobs, batch, slot),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, "batch runner cannot reach the job store");
                        break;
                    }
                }
            }
        }
    });
}

fn spawn_run(jobs: &Arc<Jobs>, batch: Batch, slot: OwnedSemaphorePermit) {
    let jobs = jobs.clone();
    jobs.tasks.clone().spawn(async move {
        let id = batch.id.clone();
        let lease = Lease {
            jobs: jobs.clone(),
            batch_id: id.clone(),
        };
        if let Err(error) = drive(&jobs, batch, &lease).await {
            tracing::warn!(batch = %id, %error, "batch run interrupted; it resumes later");
        }
        lease.release().await;
        drop(slot);
    });
}

/// One open batch whose lease ran out (or was never taken), claimed. A
/// paused batch waits for its pause to end, or for its window to close
/// unless it was forwarded to a provider (whose window applies).
///
/// Keys take turns: the batch of the key with the fewest batches running
/// (on any replica) goes first, the oldest among equals, so one key's
/// backlog of batches does not hold every other key's behind it.
async fn claim_next(jobs: &Jobs) -> Result<Option<Batch>, JobsError> {
    let now = unix_now_ms();
    let candidates = jobs
        .db
        .query(
            "SELECT waiting.id FROM sluice_batches AS waiting LEFT JOIN \
             (SELECT owner, COUNT(*) AS running FROM sluice_batches WHERE lease_until >= $1 \
              AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling') \
              GROUP BY owner) AS busy ON busy.owner = waiting.owner \
             WHERE waiting.status IN ('validating', 'in_progress', 'finalizing', 'cancelling') \
             AND waiting.lease_until < $1 \
             AND (waiting.paused_until <= $2 \
                  OR (waiting.expires_at <= $2 AND waiting.upstream_deployment IS NULL)) \
             ORDER BY COALESCE(busy.running, 0), waiting.created_at LIMIT 8",
            vec![now.into(), unix_now().into()],
        )
        .await?;
    for row in candidates {
        let Some(id) = row.into_iter().next().and_then(|value| value.into_text()) else {
            continue;
        };
        let claimed = jobs
            .db
            .execute(
                "UPDATE sluice_batches SET runner = $1, lease_until = $2 \
                 WHERE id = $3 AND lease_until < $4",
                vec![
                    jobs.replica.as_str().into(),
                    (now + jobs.batch.lease.as_millis() as i64).into(),
                    id.as_str().into(),
                    now.into(),
                ],
            )
            .await?;
        if claimed == 1
            && let Some(batch) = record::load(&jobs.db, &id).await?
        {
            tracing::info!(batch = %id, status = batch.status.as_str(), "batch claimed");
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

/// Runs a claimed batch until it is closed, paused, or the lease is lost.
async fn drive(jobs: &Arc<Jobs>, mut batch: Batch, lease: &Lease) -> Result<(), JobsError> {
    loop {
        let step = match batch.status {
            Status::Validating => validate_batch(jobs, &batch, lease).await?,
            Status::InProgress | Status::Cancelling if batch.upstream_deployment.is_some() => {
                upstream::execute(jobs, &batch, lease).await?
            }
            Status::InProgress | Status::Cancelling => run::execute(jobs, &batch, lease).await?,
            Status::Finalizing => {
                finalize::close(jobs, &batch, lease, Status::Completed).await?;
                Step::Again
            }
            _ => return Ok(()),
        };
        if let Step::Stop = step {
            return Ok(());
        }
        match record::load(&jobs.db, &batch.id).await? {
            // A step that did not move the batch (its change was refused:
            // the lease moved, or the status was not the one it expected)
            // leaves it to the next poll instead of spinning on it.
            Some(next)
                if next.status == batch.status
                    && next.upstream_batch_id == batch.upstream_batch_id =>
            {
                return Ok(());
            }
            Some(next) if next.status.is_open() => batch = next,
            _ => {
                if let Err(error) = jobs.files.release_input(&batch.input_file_id).await {
                    tracing::warn!(batch = %batch.id, %error, "deleted input file not removed");
                }
                return Ok(());
            }
        }
    }
}

async fn validate_batch(jobs: &Arc<Jobs>, batch: &Batch, lease: &Lease) -> Result<Step, JobsError> {
    let Some(identity) = jobs.identity_of(&batch.owner) else {
        fail(
            lease,
            batch,
            "key_revoked",
            "The key that made this batch no longer exists.",
        )
        .await?;
        return Ok(Step::Again);
    };
    let path = jobs.files.path(&batch.input_file_id);
    let checked = validate::validate(
        &path,
        &batch.endpoint,
        &identity,
        jobs.internal.as_ref(),
        jobs.batch.max_lines,
    )
    .await;
    let found = match checked {
        Ok(found) => found,
        Err(_) => {
            fail(lease, batch, "file_not_found", "The input file is gone.").await?;
            return Ok(Step::Again);
        }
    };
    if !found.errors.is_empty() {
        let errors = serde_json::to_string(&found.errors).unwrap_or_default();
        lease
            .transition(
                Status::Validating,
                "status = 'failed', failed_at = $1, errors = $2",
                vec![unix_now().into(), errors.into()],
            )
            .await?;
        return Ok(Step::Again);
    }
    // Chosen once, here: a batch with lines run locally is never forwarded
    // later (that would run them twice), and a forwarded one stays with
    // the deployment it went to.
    let forward_to = found
        .model
        .as_deref()
        .and_then(|model| jobs.internal.batch_deployment(model))
        .map(|deployment| deployment.name.to_string());
    lease
        .transition(
            Status::Validating,
            "status = 'in_progress', in_progress_at = $1, total = $2, model = $3, \
             upstream_deployment = $4",
            vec![
                unix_now().into(),
                found.total.into(),
                found.model.into(),
                forward_to.into(),
            ],
        )
        .await?;
    Ok(Step::Again)
}
