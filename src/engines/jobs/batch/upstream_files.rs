//! The files of a forwarded batch: its input goes up (rewritten on the way
//! when the provider knows the model by another name, or is Azure, whose
//! batch lines name `/chat/completions` without `/v1`), and the provider's
//! output and error files come down into local files the batch's owner
//! reads, with the usage their lines report summed. Files stream through
//! scratch files on disk, never whole in memory, and the lease is renewed
//! while they move.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;

use super::super::files::FileRecord;
use super::super::{Jobs, JobsError, unix_now};
use super::lease::Lease;
use super::record::{Batch, Counts, Status};
use super::validate::{Lines, Read, is_blank};
use crate::config::Provider;
use crate::engines::internal::ForwardedUsage;
use crate::upstream::Deployment;
use crate::upstream::batch_api::ApiError;
use crate::vocab::Usage;

/// Runs `work` while renewing the lease; `None` when the lease was lost or
/// the gateway is stopping (`work` is dropped then).
pub async fn under_lease<T>(
    lease: &Lease,
    work: impl Future<Output = T>,
) -> Result<Option<T>, JobsError> {
    let mut work = std::pin::pin!(work);
    let mut beat = tokio::time::interval(lease.jobs.batch.lease / 3);
    loop {
        tokio::select! {
            out = &mut work => return Ok(Some(out)),
            _ = beat.tick() => {
                if !lease.renew().await? {
                    tracing::warn!(batch = %lease.batch_id, "batch lease taken by another replica; leaving it");
                    return Ok(None);
                }
            }
            () = lease.jobs.tasks.stopping() => return Ok(None),
        }
    }
}

/// An endpoint as Azure's Batch API names it: `/chat/completions`.
pub fn azure_path(endpoint: &str) -> &str {
    endpoint.strip_prefix("/v1").unwrap_or(endpoint)
}

/// Uploads the batch's input to the provider: the provider's file id,
/// `None` when the lease was lost meanwhile.
pub async fn upload_input(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    deployment: &Deployment,
) -> Result<Option<Result<String, ApiError>>, JobsError> {
    let input = jobs.files.path(&batch.input_file_id);
    let model = batch.model.as_deref().unwrap_or_default();
    let rewrite =
        deployment.provider == Provider::Azure || deployment.upstream_model(model) != model;
    // Named for this replica: one that took the batch over writes its own.
    let scratch = jobs
        .files
        .scratch(&format!("{}-upstream-input-{}", batch.id, jobs.replica));
    let path = if rewrite {
        rewrite_input(&input, &scratch, deployment)
            .await
            .map_err(JobsError::Storage)?;
        &scratch
    } else {
        &input
    };
    let filename = format!("{}.jsonl", batch.id);
    let uploaded = under_lease(
        lease,
        jobs.upstream
            .upload_batch_input(deployment, path, &filename),
    )
    .await;
    if rewrite {
        let _ = tokio::fs::remove_file(&scratch).await;
    }
    uploaded
}

/// Copies the input to `scratch`, each line's `body.model` renamed as the
/// deployment knows it (and its `url` without `/v1` for Azure).
async fn rewrite_input(
    input: &std::path::Path,
    scratch: &std::path::Path,
    deployment: &Deployment,
) -> std::io::Result<()> {
    let mut lines = Lines::open(input).await?;
    let file = tokio::fs::File::create(scratch).await?;
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, file);
    let azure = deployment.provider == Provider::Azure;
    loop {
        let line = match lines.next().await? {
            Read::End => break,
            // Validation refused such files; nothing to send.
            Read::TooLong => continue,
            Read::Line(line) if is_blank(line) => continue,
            Read::Line(line) => line,
        };
        let bytes = rewrite_line(line, deployment, azure)?;
        out.write_all(&bytes).await?;
        out.write_all(b"\n").await?;
    }
    out.flush().await?;
    out.get_ref().sync_all().await
}

/// One line with its model renamed (and its url made Azure's). Every value
/// but those two is kept as raw JSON, so a number past f64's range or a
/// large integer goes up exactly as the client wrote it.
fn rewrite_line(line: &[u8], deployment: &Deployment, azure: bool) -> std::io::Result<Vec<u8>> {
    type Raw = Box<serde_json::value::RawValue>;
    let fields: std::collections::BTreeMap<String, Raw> =
        serde_json::from_slice(line).map_err(std::io::Error::other)?;
    let mut out: std::collections::BTreeMap<String, Raw> = std::collections::BTreeMap::new();
    for (name, value) in fields {
        let value = match name.as_str() {
            "body" => rename_model(&value, deployment)?,
            "url" if azure => {
                let url: String =
                    serde_json::from_str(value.get()).map_err(std::io::Error::other)?;
                serde_json::value::to_raw_value(azure_path(&url)).map_err(std::io::Error::other)?
            }
            _ => value,
        };
        out.insert(name, value);
    }
    serde_json::to_vec(&out).map_err(std::io::Error::other)
}

fn rename_model(
    body: &serde_json::value::RawValue,
    deployment: &Deployment,
) -> std::io::Result<Box<serde_json::value::RawValue>> {
    let mut fields: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(body.get()).map_err(std::io::Error::other)?;
    if let Some(model) = fields.get("model")
        && let Ok(name) = serde_json::from_str::<String>(model.get())
    {
        let renamed = deployment.upstream_model(&name).to_owned();
        fields.insert(
            "model".to_owned(),
            serde_json::value::to_raw_value(&renamed).map_err(std::io::Error::other)?,
        );
    }
    serde_json::value::to_raw_value(&fields).map_err(std::io::Error::other)
}

/// How closing a forwarded batch went.
pub enum Closing {
    Closed,
    /// A file did not come down; tried again at the next poll.
    Later(ApiError),
    /// The lease was lost or the gateway is stopping.
    Left,
}

/// Copies the finished provider batch's files down and moves the batch to
/// `target`, with the provider's counts, the usage its output reports and,
/// when it failed, its errors.
pub async fn close(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    deployment: &Deployment,
    object: &Json,
    (target, mut counts): (Status, Counts),
) -> Result<Closing, JobsError> {
    let mut files = [None, None];
    let mut usage = Usage::default();
    for (slot, (field, failed)) in files
        .iter_mut()
        .zip([("output_file_id", false), ("error_file_id", true)])
    {
        let Some(file_id) = object[field].as_str() else {
            continue;
        };
        match copy_down(jobs, batch, lease, deployment, file_id, failed).await? {
            None => return Ok(Closing::Left),
            Some(Err(error)) => return Ok(Closing::Later(error)),
            Some(Ok(None)) => {}
            Some(Ok(Some((id, reported)))) => {
                *slot = Some(id);
                usage.prompt_tokens += reported.prompt_tokens;
                usage.completion_tokens += reported.completion_tokens;
                usage.cached_tokens += reported.cached_tokens;
            }
        }
    }
    if usage.total() > 0 {
        counts.input_tokens = usage.prompt_tokens as i64;
        counts.output_tokens = usage.completion_tokens as i64;
        counts.cached_tokens = usage.cached_tokens as i64;
    }
    let errors = object["errors"]["data"]
        .as_array()
        .filter(|data| !data.is_empty())
        .map(|data| Json::Array(data.clone()).to_string());
    let stamp = match target {
        Status::Failed => "failed_at",
        Status::Expired => "expired_at",
        Status::Cancelled => "cancelled_at",
        _ => "completed_at",
    };
    let [output, error] = files;
    let moved = lease
        .transition(
            batch.status,
            &format!(
                "status = $1, {stamp} = $2, output_file_id = $3, error_file_id = $4, \
                 errors = COALESCE($5, errors), {}",
                Counts::assignments(6)
            ),
            [
                target.as_str().into(),
                unix_now().into(),
                output.into(),
                error.into(),
                errors.into(),
            ]
            .into_iter()
            .chain(counts.values())
            .collect(),
        )
        .await?;
    if moved {
        tracing::info!(batch = %batch.id, status = target.as_str(), "forwarded batch closed");
        meter(jobs, batch, deployment, &counts);
    }
    Ok(Closing::Closed)
}

/// Bills the provider's usage once, by the replica whose close won: the
/// lines never passed the pipeline that meters local ones.
fn meter(jobs: &Jobs, batch: &Batch, deployment: &Deployment, counts: &Counts) {
    let tokens = |count: i64| u64::try_from(count).unwrap_or(0);
    let usage = Usage {
        prompt_tokens: tokens(counts.input_tokens),
        completion_tokens: tokens(counts.output_tokens),
        cached_tokens: tokens(counts.cached_tokens),
    };
    let Some(model) = batch.model.clone() else {
        return;
    };
    if usage.total() == 0 {
        return;
    }
    jobs.internal.meter_forwarded(ForwardedUsage {
        batch_id: batch.id.clone(),
        key_id: batch.owner.clone(),
        org: batch.org.clone(),
        model,
        deployment: deployment.name.to_string(),
        usage,
    });
}

/// What copying one file down gave: the local file's id and the usage
/// its lines report (`None` for an empty file); an error to retry; or
/// `None` outside when the lease was lost.
type Copied = Option<Result<Option<(String, Usage)>, ApiError>>;

/// Downloads the provider's file into the batch's output (or error) file.
async fn copy_down(
    jobs: &Arc<Jobs>,
    batch: &Batch,
    lease: &Lease,
    deployment: &Deployment,
    file_id: &str,
    failed: bool,
) -> Result<Copied, JobsError> {
    let suffix = batch.id.strip_prefix("batch_").unwrap_or(&batch.id);
    let id = format!("file-{}{suffix}", if failed { "err" } else { "out" });
    let scratch = jobs.files.scratch(&id);
    let cap = jobs.batch.max_file_bytes.saturating_mul(2);
    let downloaded = under_lease(
        lease,
        jobs.upstream
            .download_file(deployment, file_id, &scratch, cap),
    )
    .await?;
    let bytes = match downloaded {
        Some(Ok(bytes)) => bytes,
        other => {
            let _ = tokio::fs::remove_file(&scratch).await;
            return Ok(other.map(|result| result.map(|_| None)));
        }
    };
    if bytes == 0 {
        let _ = tokio::fs::remove_file(&scratch).await;
        return Ok(Some(Ok(None)));
    }
    let usage = reported_usage(&scratch).await.map_err(JobsError::Storage)?;
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
        bytes: bytes as i64,
        created_at: unix_now(),
        expires_at: batch
            .output_expires_after
            .map(|seconds| unix_now() + seconds),
    };
    jobs.files.put(&record, &scratch).await?;
    Ok(Some(Ok(Some((id, usage)))))
}

/// The usage of every answer in an output file (`response.body.usage`).
async fn reported_usage(path: &std::path::Path) -> std::io::Result<Usage> {
    #[derive(Deserialize)]
    struct OutputLine<'a> {
        #[serde(borrow, default)]
        response: Option<Answer<'a>>,
    }
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, default)]
        body: Option<&'a RawValue>,
    }
    let mut lines = Lines::open(path).await?;
    let mut sum = Usage::default();
    loop {
        let line = match lines.next().await? {
            Read::End => return Ok(sum),
            Read::TooLong => continue,
            Read::Line(line) => line,
        };
        let usage = serde_json::from_slice::<OutputLine<'_>>(line)
            .ok()
            .and_then(|line| line.response?.body)
            .and_then(|body| crate::infra::sse::usage::parse(body.get().as_bytes()));
        if let Some(usage) = usage {
            sum.prompt_tokens += usage.prompt_tokens;
            sum.completion_tokens += usage.completion_tokens;
            sum.cached_tokens += usage.cached_tokens;
        }
    }
}
