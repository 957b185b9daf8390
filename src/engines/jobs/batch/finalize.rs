//! Closing a batch: the recorded lines are written out as the output file
//! (successes) and the error file (failures), in input order, then the batch
//! moves to its final status naming them. Every step can run again after a
//! crash: file ids follow from the batch id and a rewrite replaces the bytes.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::super::files::FileRecord;
use super::super::{Jobs, JobsError, unix_now};
use super::lease::Lease;
use super::lease::record;
use super::line::error_text;
use super::record::{Batch, Counts, Status};
use super::validate::{InputLine, Lines, Read, is_blank};
use crate::infra::sql::Value;
use crate::vocab::Usage;

/// Rows read from the store per query while writing the files: answers
/// are up to 32 MiB each, so a page is kept short.
const PAGE: i64 = 200;
/// Lines recorded by `record_rest` between two renewals of the lease: a
/// long step keeps its claim, so no other replica starts the same work.
const RENEW_EVERY: i64 = 500;

/// Records every line not recorded yet as an error `code` (expired, or the
/// key is gone), reading the custom ids from the input file.
pub async fn record_rest(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    recorded: &[bool],
    code: &str,
    message: &str,
) -> Result<(), JobsError> {
    let mut lines = Lines::open(&jobs.files.path(&batch.input_file_id))
        .await
        .map_err(JobsError::Storage)?;
    let mut index = 0i64;
    loop {
        let custom_id = match lines.next().await.map_err(JobsError::Storage)? {
            Read::End => return Ok(()),
            Read::TooLong => continue,
            Read::Line(line) if is_blank(line) => continue,
            Read::Line(line) => serde_json::from_slice::<InputLine<'_>>(line)
                .map(|line| line.custom_id.into_owned())
                .unwrap_or_default(),
        };
        let this = index;
        index += 1;
        if recorded.get(this as usize).copied().unwrap_or(false) {
            continue;
        }
        if this % RENEW_EVERY == 0 && !lease.renew().await? {
            return Err(JobsError::Conflict(
                "the batch's lease moved to another replica".into(),
            ));
        }
        let output = error_text(&custom_id, code, message);
        record(jobs, &batch.id, this, true, &output, Usage::default()).await?;
        let result = if code == "batch_expired" {
            "expired"
        } else {
            "failed"
        };
        jobs.metrics.batch_lines.with_label_values(&[result]).inc();
    }
}

/// Writes the output and error files and moves the batch to `target`.
pub async fn close(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    target: Status,
) -> Result<(), JobsError> {
    let output = write_file(jobs, batch, lease, false).await?;
    let errors = write_file(jobs, batch, lease, true).await?;
    // Kept on the row, so a closed batch is shown without summing its lines.
    let counts = match batch.recorded_counts {
        Some(counts) => counts,
        None => super::record::counts(&jobs.db, &batch.id).await?,
    };
    let now = unix_now();
    let (from, stamp) = match target {
        Status::Cancelled => (Status::Cancelling, "cancelled_at"),
        Status::Expired => (Status::InProgress, "expired_at"),
        _ => (Status::Finalizing, "completed_at"),
    };
    let moved = lease
        .transition(
            from,
            &format!(
                "status = $1, {stamp} = $2, output_file_id = $3, error_file_id = $4, {}",
                Counts::assignments(5)
            ),
            [
                target.as_str().into(),
                now.into(),
                output.into(),
                errors.into(),
            ]
            .into_iter()
            .chain(counts.values())
            .collect(),
        )
        .await?;
    if moved {
        tracing::info!(batch = %batch.id, status = target.as_str(), "batch closed");
    }
    Ok(())
}

/// Writes the successes (or the failures) to a file; `None` when there are
/// none.
async fn write_file(
    jobs: &Jobs,
    batch: &Batch,
    lease: &Lease,
    failed: bool,
) -> Result<Option<String>, JobsError> {
    let suffix = batch.id.strip_prefix("batch_").unwrap_or(&batch.id);
    let id = format!("file-{}{suffix}", if failed { "err" } else { "out" });
    // Named for this replica too: a replica that took the batch over while
    // this one still finalizes writes its own copy, not into this one's.
    let scratch = jobs.files.scratch(&format!("{id}-{}", jobs.replica));
    let file = tokio::fs::File::create(&scratch)
        .await
        .map_err(JobsError::Storage)?;
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    let mut written = 0i64;
    let mut after = -1i64;
    loop {
        let rows = jobs
            .db
            .query(
                "SELECT line, output FROM sluice_batch_results \
                 WHERE batch_id = $1 AND failed = $2 AND line > $3 ORDER BY line LIMIT $4",
                vec![
                    batch.id.as_str().into(),
                    i64::from(failed).into(),
                    after.into(),
                    PAGE.into(),
                ],
            )
            .await?;
        let count = rows.len();
        if !lease.renew().await? {
            let _ = tokio::fs::remove_file(&scratch).await;
            return Err(JobsError::Conflict(
                "the batch's lease moved to another replica".into(),
            ));
        }
        for row in rows {
            let mut values = row.into_iter();
            after = values.next().and_then(|value| value.int()).unwrap_or(after);
            let text = values.next().and_then(Value::into_text).unwrap_or_default();
            out.write_all(text.as_bytes())
                .await
                .map_err(JobsError::Storage)?;
            out.write_all(b"\n").await.map_err(JobsError::Storage)?;
            written += text.len() as i64 + 1;
        }
        if (count as i64) < PAGE {
            break;
        }
    }
    out.flush().await.map_err(JobsError::Storage)?;
    out.get_ref().sync_all().await.map_err(JobsError::Storage)?;
    drop(out);
    if written == 0 {
        let _ = tokio::fs::remove_file(&scratch).await;
        return Ok(None);
    }
    let record = FileRecord {
        id: id.clone(),
        owner: batch.owner.clone(),
        org: batch.org.clone(),
        purpose: "batch_output".to_owned(),
        filename: format!(
            "{}_{}.jsonl",
            batch.id,
            if failed { "error" } else { "output" }
        ),
        bytes: written,
        created_at: unix_now(),
        expires_at: batch
            .output_expires_after
            .map(|seconds| unix_now() + seconds),
    };
    jobs.files.put(&record, &scratch).await?;
    Ok(Some(id))
}
