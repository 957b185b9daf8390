//! A replica's claim on one batch (a compare-and-set on `(runner,
//! lease_until)`), what the runner does after a step, and the writes every
//! step shares: a line's result, and a batch that cannot run at all.

use std::sync::Arc;

use super::super::{Jobs, JobsError, unix_now, unix_now_ms};
use super::record::{Batch, Status};
use crate::vocab::Usage;

/// This replica's claim on one batch.
pub struct Lease {
    pub jobs: Arc<Jobs>,
    pub batch_id: String,
}

impl Lease {
    /// Extends the claim; `false` when another replica holds it now.
    pub async fn renew(&self) -> Result<bool, JobsError> {
        let until = unix_now_ms() + self.jobs.batch.lease.as_millis() as i64;
        let renewed = self
            .jobs
            .db
            .execute(
                "UPDATE sluice_batches SET lease_until = $1 WHERE id = $2 AND runner = $3",
                vec![
                    until.into(),
                    self.batch_id.as_str().into(),
                    self.jobs.replica.as_str().into(),
                ],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the batch up at once, so the next poll (here or elsewhere) can
    /// take it without waiting for the lease to run out.
    pub(super) async fn release(&self) {
        let released = self
            .jobs
            .db
            .execute(
                "UPDATE sluice_batches SET lease_until = 0 WHERE id = $1 AND runner = $2",
                vec![
                    self.batch_id.as_str().into(),
                    self.jobs.replica.as_str().into(),
                ],
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(batch = %self.batch_id, %error, "batch lease not released; it runs out");
        }
    }

    /// Moves the batch from `from` to the state `set` describes, only while
    /// this replica holds it; `false` when the status or the lease moved.
    pub async fn transition(
        &self,
        from: Status,
        set: &str,
        mut values: Vec<crate::infra::sql::Value>,
    ) -> Result<bool, JobsError> {
        let first = values.len() + 1;
        values.extend([
            self.batch_id.as_str().into(),
            from.as_str().into(),
            self.jobs.replica.as_str().into(),
        ]);
        let changed = self
            .jobs
            .db
            .execute(
                &format!(
                    "UPDATE sluice_batches SET {set} WHERE id = ${first} AND status = ${} AND runner = ${}",
                    first + 1,
                    first + 2
                ),
                values,
            )
            .await?;
        Ok(changed == 1)
    }
}

/// What the runner does after a step.
pub enum Step {
    /// Reload the batch and go on with its new status.
    Again,
    /// Leave it (paused, lease lost, shutting down).
    Stop,
}

/// Fails a batch that cannot run at all (its key or input file is gone).
pub async fn fail(
    lease: &Lease,
    batch: &Batch,
    code: &str,
    message: &str,
) -> Result<(), JobsError> {
    let errors =
        serde_json::json!([{"code": code, "message": message, "param": null, "line": null}]);
    lease
        .transition(
            batch.status,
            "status = 'failed', failed_at = $1, errors = $2",
            vec![unix_now().into(), errors.to_string().into()],
        )
        .await?;
    Ok(())
}

/// Records one line's result; a second record of the same line is ignored.
pub async fn record(
    jobs: &Jobs,
    batch_id: &str,
    index: i64,
    failed: bool,
    output: &str,
    usage: Usage,
) -> Result<(), JobsError> {
    jobs.db
        .execute(
            "INSERT INTO sluice_batch_results \
             (batch_id, line, failed, input_tokens, output_tokens, cached_tokens, output) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            vec![
                batch_id.into(),
                index.into(),
                i64::from(failed).into(),
                (usage.prompt_tokens as i64).into(),
                (usage.completion_tokens as i64).into(),
                (usage.cached_tokens as i64).into(),
                output.into(),
            ],
        )
        .await?;
    Ok(())
}
