//! `/v1/uploads`: a large file sent in parts (the SDKs' chunked upload),
//! joined into a file of Sluice's own Files store. Create names the file
//! and its size; each part is a multipart `data` field of at most 64 MiB;
//! complete joins the parts in the order given, checking the size (and the
//! MD5, when given); cancel drops them. Each call is the caller's own, like
//! files.

use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::super::files::api::{
    Caller, check_purpose, expiry_seconds, multipart_error, next_field, owner_of,
};
use super::super::{Jobs, JobsError, json_answer, new_sorted_id, unix_now};
use super::store::{self, NewUpload, UploadRecord};

/// OpenAI's largest part.
const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;
/// Longest pause between two pieces of a part.
const PART_STALL: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize)]
struct CreateBody {
    filename: String,
    purpose: String,
    bytes: i64,
    mime_type: String,
    #[serde(default)]
    expires_after: Option<ExpiresAfter>,
}

#[derive(Deserialize)]
struct ExpiresAfter {
    anchor: String,
    seconds: i64,
}

#[derive(Deserialize)]
struct CompleteBody {
    part_ids: Vec<String>,
    #[serde(default)]
    md5: Option<String>,
}

/// `POST /v1/uploads`.
pub async fn create(State(jobs): State<Arc<Jobs>>, request: Request) -> Response {
    json_answer(
        create_upload(&jobs, request)
            .await
            .map(|upload| upload.to_json(None)),
    )
}

async fn create_upload(jobs: &Jobs, request: Request) -> Result<UploadRecord, JobsError> {
    let owner = owner_of(&request)?;
    let body: CreateBody = json_body(request).await?;
    let purpose = check_purpose(Some(&body.purpose))?;
    if body.filename.is_empty() || body.filename.len() > 255 {
        return Err(JobsError::invalid(
            "filename must be 1 to 255 bytes.",
            Some("filename"),
        ));
    }
    if body.mime_type.is_empty() || body.mime_type.len() > 255 {
        return Err(JobsError::invalid(
            "mime_type must be 1 to 255 bytes.",
            Some("mime_type"),
        ));
    }
    let limit = jobs.batch.max_file_bytes;
    if body.bytes <= 0 || body.bytes as u64 > limit {
        return Err(JobsError::invalid(
            format!("bytes must be from 1 to {limit}, the largest file this gateway keeps."),
            Some("bytes"),
        ));
    }
    let quota = jobs.batch.max_stored_bytes_per_key;
    let used = jobs.files.stored_bytes(&owner.key_id).await?;
    if used.saturating_add(body.bytes as u64) > quota {
        return Err(JobsError::StorageFull { used, limit: quota });
    }
    let file_expires_at = match &body.expires_after {
        None => None,
        Some(after) if after.anchor == "created_at" => {
            Some(unix_now() + expiry_seconds(&after.seconds.to_string())?)
        }
        Some(_) => {
            return Err(JobsError::invalid(
                "expires_after.anchor must be \"created_at\".",
                Some("expires_after"),
            ));
        }
    };
    let new = NewUpload {
        owner: &owner,
        filename: &body.filename,
        purpose,
        mime_type: &body.mime_type,
        bytes: body.bytes,
        file_expires_at,
    };
    store::create(jobs, new).await
}

/// `POST /v1/uploads/{id}/parts`: one part, as the form's `data` field.
pub async fn add_part(
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    json_answer(store_part(&jobs, &id, request).await)
}

async fn store_part(
    jobs: &Jobs,
    id: &str,
    request: Request,
) -> Result<serde_json::Value, JobsError> {
    let owner = owner_of(&request)?;
    let upload = store::get(jobs, id, &owner).await?;
    store::still_pending(&upload)?;
    let room = (upload.bytes - store::part_bytes(jobs, id).await?).max(0) as u64;
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|rejection| JobsError::invalid(rejection.body_text(), None))?;
    let part_id = new_sorted_id("part_");
    let path = jobs.files.scratch(&part_id);
    let mut written = None;
    while let Some(field) = next_field(&mut form).await? {
        if field.name() != Some("data") || written.is_some() {
            continue;
        }
        match copy_part(field, &path, MAX_PART_BYTES.min(room)).await {
            Ok(bytes) => written = Some(bytes),
            Err(error) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(error);
            }
        }
    }
    let Some(bytes) = written else {
        return Err(JobsError::invalid(
            "The form has no `data` part.",
            Some("data"),
        ));
    };
    let created_at = match store::add_part(jobs, id, &part_id, bytes as i64).await {
        Ok(created_at) => created_at,
        Err(error) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(error);
        }
    };
    Ok(serde_json::json!({
        "id": part_id, "object": "upload.part", "created_at": created_at, "upload_id": id,
    }))
}

/// Streams one part to its own file, refusing it past `limit` bytes.
async fn copy_part(
    mut field: axum::extract::multipart::Field<'_>,
    path: &std::path::Path,
    limit: u64,
) -> Result<u64, JobsError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(JobsError::Storage)?;
    let mut written: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(PART_STALL, field.chunk()).await {
            Err(_) => return Err(JobsError::Stalled(PART_STALL)),
            Ok(chunk) => chunk.map_err(|error| multipart_error(&error))?,
        };
        let Some(chunk) = chunk else { break };
        written += chunk.len() as u64;
        if written > limit {
            return Err(JobsError::invalid(
                format!(
                    "The part is larger than the {limit} bytes the upload has room for (a part is at most 64 MiB)."
                ),
                Some("data"),
            ));
        }
        file.write_all(&chunk).await.map_err(JobsError::Storage)?;
    }
    file.flush().await.map_err(JobsError::Storage)?;
    file.sync_all().await.map_err(JobsError::Storage)?;
    Ok(written)
}

/// `POST /v1/uploads/{id}/complete`.
pub async fn complete(
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    json_answer(complete_upload(&jobs, &id, request).await)
}

async fn complete_upload(
    jobs: &Jobs,
    id: &str,
    request: Request,
) -> Result<serde_json::Value, JobsError> {
    let owner = owner_of(&request)?;
    let body: CompleteBody = json_body(request).await?;
    let upload = store::get(jobs, id, &owner).await?;
    store::still_pending(&upload)?;
    let known = store::parts(jobs, id).await?;
    if let Some(unknown) = body
        .part_ids
        .iter()
        .find(|part| !known.iter().any(|(id, _)| id == *part))
    {
        return Err(JobsError::invalid(
            format!(
                "The part {} is not a part of this upload.",
                crate::util::text::clip(unknown)
            ),
            Some("part_ids"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if !body.part_ids.iter().all(|part| seen.insert(part)) {
        return Err(JobsError::invalid(
            "A part is named twice.",
            Some("part_ids"),
        ));
    }
    store::claim(jobs, &upload, "completing").await?;
    match store::join(jobs, &upload, &body.part_ids, body.md5.as_deref(), &owner).await {
        Ok(file) => {
            store::set_status(jobs, id, "completed", Some(&file.id)).await?;
            store::drop_parts(jobs, id).await?;
            let upload = UploadRecord {
                status: "completed".into(),
                ..upload
            };
            Ok(upload.to_json(Some(&file)))
        }
        Err(error) => {
            // The parts stay: the client may complete again in another order.
            store::set_status(jobs, id, "pending", None).await?;
            Err(error)
        }
    }
}

/// `POST /v1/uploads/{id}/cancel`.
pub async fn cancel(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let cancelled = async {
        let upload = store::get(&jobs, &id, &owner).await?;
        store::claim(&jobs, &upload, "cancelled").await?;
        store::drop_parts(&jobs, &id).await?;
        Ok(UploadRecord {
            status: "cancelled".into(),
            ..upload
        }
        .to_json(None))
    };
    json_answer(cancelled.await)
}

/// A JSON body of at most 1 MiB, refused in OpenAI's words.
async fn json_body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, JobsError> {
    let bytes = axum::body::to_bytes(request.into_body(), 1024 * 1024)
        .await
        .map_err(|_| JobsError::invalid("The body is larger than 1 MiB.", None))?;
    serde_json::from_slice(&bytes).map_err(|error| {
        JobsError::invalid(
            format!(
                "The body is not the JSON this call takes: {}",
                crate::util::text::clip(&error.to_string())
            ),
            None,
        )
    })
}
