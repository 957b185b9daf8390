//! `/v1/files`: upload (multipart, streamed to disk), list, retrieve,
//! content (streamed from disk) and delete, each limited to the caller's
//! own files (or its org's, with `[batch] share_with_org`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::super::{Jobs, JobsError, Owner, json_answer, list_page, unix_now};
use super::store::{FilePage, NewFile, Upload};

/// Longest pause between two pieces of an upload.
const UPLOAD_STALL: Duration = Duration::from_secs(30);

/// What `purpose` may be on upload (the service writes `batch_output`).
const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// Batch input files are kept 30 days unless asked otherwise.
const BATCH_FILE_DAYS: i64 = 30;

/// The caller, as the `JobOwner` stage attached it.
pub fn owner_of(request: &Request) -> Result<Owner, JobsError> {
    Caller::of(request.extensions()).map(|caller| caller.0)
}

/// The owner a call acts for, as the `JobOwner` stage attached it.
pub struct Caller(pub Owner);

impl Caller {
    fn of(extensions: &http::Extensions) -> Result<Self, JobsError> {
        extensions
            .get::<Owner>()
            .map(|owner| Self(owner.clone()))
            .ok_or_else(|| JobsError::invalid("no caller", None))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = JobsError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, JobsError> {
        Self::of(&parts.extensions)
    }
}

/// The form fields other than the file, as they arrive.
#[derive(Default)]
struct Fields {
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

impl Fields {
    /// Longest a text field may be; a longer one is refused unread.
    const MAX: usize = 256;

    fn take(&mut self, name: &str, value: String) -> Result<(), JobsError> {
        let slot = match name {
            "purpose" => &mut self.purpose,
            "expires_after[anchor]" => &mut self.anchor,
            "expires_after[seconds]" => &mut self.seconds,
            _ => return Ok(()),
        };
        *slot = Some(value);
        Ok(())
    }

    /// When the file expires, from `expires_after` or the purpose's default.
    fn expires_at(&self, purpose: &str) -> Result<Option<i64>, JobsError> {
        let now = unix_now();
        match (&self.anchor, &self.seconds) {
            (None, None) if purpose == "batch" => Ok(Some(now + BATCH_FILE_DAYS * 86_400)),
            (None, None) => Ok(None),
            (anchor, Some(seconds)) => {
                if anchor
                    .as_deref()
                    .is_some_and(|anchor| anchor != "created_at")
                {
                    return Err(JobsError::invalid(
                        "expires_after[anchor] must be \"created_at\".",
                        Some("expires_after"),
                    ));
                }
                Ok(Some(now + expiry_seconds(seconds)?))
            }
            (Some(_), None) => Err(JobsError::invalid(
                "expires_after needs seconds.",
                Some("expires_after"),
            )),
        }
    }
}

/// `expires_after[seconds]`: 3600 to 2592000 (one hour to 30 days).
pub fn expiry_seconds(text: &str) -> Result<i64, JobsError> {
    match text.trim().parse::<i64>() {
        Ok(seconds) if (3600..=2_592_000).contains(&seconds) => Ok(seconds),
        _ => Err(JobsError::invalid(
            "expires_after seconds must be a whole number from 3600 to 2592000.",
            Some("expires_after"),
        )),
    }
}

/// `POST /v1/files`.
pub async fn upload(State(jobs): State<Arc<Jobs>>, request: Request) -> Response {
    json_answer(
        store_upload(&jobs, request)
            .await
            .map(|record| record.to_json()),
    )
}

async fn store_upload(jobs: &Jobs, request: Request) -> Result<super::FileRecord, JobsError> {
    let owner = owner_of(&request)?;
    let quota = jobs.batch.max_stored_bytes_per_key;
    let used = jobs.files.stored_bytes(&owner.key_id).await?;
    if used >= quota {
        return Err(JobsError::StorageFull { used, limit: quota });
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|rejection| JobsError::invalid(rejection.body_text(), None))?;
    let mut fields = Fields::default();
    let mut stored: Option<(Upload, String)> = None;
    // The upload stops at the key's room as well as at the file limit: a
    // file that would overfill the key is not streamed to its end first.
    let room = quota - used;
    let limit = jobs.batch.max_file_bytes.min(room);
    let past_room = |error| match error {
        JobsError::TooLarge { .. } if room < jobs.batch.max_file_bytes => {
            JobsError::StorageFull { used, limit: quota }
        }
        error => error,
    };
    loop {
        let field = match next_field(&mut form).await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                abandon(stored).await;
                return Err(error);
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" && stored.is_none() {
            let filename = field
                .file_name()
                .unwrap_or("upload")
                .chars()
                .take(255)
                .collect();
            let mut upload = jobs.files.begin(limit).await?;
            if let Err(error) = copy_field(field, &mut upload).await {
                upload.abandon().await;
                abandon(stored).await;
                return Err(past_room(error));
            }
            stored = Some((upload, filename));
            continue;
        }
        let value = match read_text(field).await {
            Ok(value) => value,
            Err(error) => {
                abandon(stored).await;
                return Err(error);
            }
        };
        fields.take(&name, value)?;
    }
    let Some((upload, filename)) = stored else {
        return Err(JobsError::invalid(
            "The form has no `file` part.",
            Some("file"),
        ));
    };
    let checked = check_purpose(fields.purpose.as_deref())
        .and_then(|purpose| Ok((purpose, fields.expires_at(purpose)?)));
    let (purpose, expires_at) = match checked {
        Ok(checked) => checked,
        Err(error) => {
            upload.abandon().await;
            return Err(error);
        }
    };
    let new = NewFile {
        owner: &owner,
        purpose,
        filename: &filename,
        expires_at,
    };
    jobs.files.finish(upload, new).await
}

async fn abandon(stored: Option<(Upload, String)>) {
    if let Some((upload, _)) = stored {
        upload.abandon().await;
    }
}

pub(in crate::engines::jobs) fn check_purpose(purpose: Option<&str>) -> Result<&str, JobsError> {
    match purpose {
        Some(purpose) if PURPOSES.contains(&purpose) => Ok(purpose),
        Some(_) => Err(JobsError::invalid(
            format!("purpose must be one of {}.", PURPOSES.join(", ")),
            Some("purpose"),
        )),
        None => Err(JobsError::invalid(
            "The form has no `purpose`.",
            Some("purpose"),
        )),
    }
}

pub(in crate::engines::jobs) async fn next_field<'a>(
    form: &'a mut Multipart,
) -> Result<Option<axum::extract::multipart::Field<'a>>, JobsError> {
    match tokio::time::timeout(UPLOAD_STALL, form.next_field()).await {
        Err(_) => Err(JobsError::Stalled(UPLOAD_STALL)),
        Ok(result) => result.map_err(|error| multipart_error(&error)),
    }
}

/// Streams one part to the upload, with a deadline on every piece.
async fn copy_field(
    mut field: axum::extract::multipart::Field<'_>,
    upload: &mut Upload,
) -> Result<(), JobsError> {
    loop {
        let chunk = match tokio::time::timeout(UPLOAD_STALL, field.chunk()).await {
            Err(_) => return Err(JobsError::Stalled(UPLOAD_STALL)),
            Ok(chunk) => chunk.map_err(|error| multipart_error(&error))?,
        };
        match chunk {
            Some(chunk) => upload.write(&chunk).await?,
            None => return Ok(()),
        }
    }
}

/// A short text field, refused past `Fields::MAX` bytes.
async fn read_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, JobsError> {
    let mut text = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(UPLOAD_STALL, field.chunk()).await {
            Err(_) => return Err(JobsError::Stalled(UPLOAD_STALL)),
            Ok(chunk) => chunk.map_err(|error| multipart_error(&error))?,
        };
        let Some(chunk) = chunk else { break };
        if text.len() + chunk.len() > Fields::MAX {
            return Err(JobsError::invalid(
                format!("A form field is longer than {} bytes.", Fields::MAX),
                None,
            ));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).map_err(|_| JobsError::invalid("A form field is not UTF-8.", None))
}

pub(in crate::engines::jobs) fn multipart_error(
    error: &axum::extract::multipart::MultipartError,
) -> JobsError {
    let text = error.body_text();
    if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return JobsError::invalid(format!("The upload is too large: {text}"), None);
    }
    JobsError::invalid(
        format!(
            "The multipart body is malformed: {}",
            crate::util::text::clip(&text)
        ),
        None,
    )
}

/// A query string that does not parse, as a short OpenAI-shaped error.
pub fn query_error(rejection: &QueryRejection) -> JobsError {
    JobsError::invalid(
        crate::util::text::clip(&rejection.body_text()).into_owned(),
        None,
    )
}

/// A list's `limit`: `default` when absent, else 1 to `max`.
pub fn page_limit(asked: Option<usize>, default: usize, max: usize) -> Result<usize, JobsError> {
    let limit = asked.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(JobsError::invalid(
            format!("limit must be from 1 to {max}."),
            Some("limit"),
        ));
    }
    Ok(limit)
}

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
    purpose: Option<String>,
}

/// `GET /v1/files`.
pub async fn list(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let listed = async {
        let Query(query) = query.map_err(|rejection| query_error(&rejection))?;
        let limit = page_limit(query.limit, 10_000, 10_000)?;
        let descending = match query.order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => {
                return Err(JobsError::invalid(
                    "order must be asc or desc.",
                    Some("order"),
                ));
            }
        };
        let page = FilePage {
            after: query.after,
            limit,
            descending,
            purpose: query.purpose,
        };
        jobs.files.list(&owner, &page).await
    };
    json_answer(listed.await.map(|(files, has_more)| {
        let data = files.iter().map(super::FileRecord::to_json).collect();
        let first = files.first().map(|file| file.id.as_str());
        list_page(
            data,
            first,
            files.last().map(|file| file.id.as_str()),
            has_more,
        )
    }))
}

/// `GET /v1/files/{id}`.
pub async fn retrieve(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let found = async {
        jobs.files
            .get(&id, &owner)
            .await?
            .ok_or_else(|| JobsError::not_found("file", &id))
    };
    json_answer(found.await.map(|file| file.to_json()))
}

/// `GET /v1/files/{id}/content`: the bytes, streamed from disk.
pub async fn content(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let opened = async {
        let file = jobs
            .files
            .get(&id, &owner)
            .await?
            .ok_or_else(|| JobsError::not_found("file", &id))?;
        let bytes = tokio::fs::File::open(jobs.files.path(&file.id))
            .await
            .map_err(JobsError::Storage)?;
        Ok::<_, JobsError>((file, bytes))
    };
    match opened.await {
        Ok((file, bytes)) => {
            let stream = tokio_util::io::ReaderStream::with_capacity(bytes, 64 * 1024);
            let mut response = Body::from_stream(stream).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(file.bytes.max(0) as u64),
            );
            response
        }
        Err(error) => error.into_response(),
    }
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(
    State(jobs): State<Arc<Jobs>>,
    Caller(owner): Caller,
    Path(id): Path<String>,
) -> Response {
    let deleted = async {
        match jobs.files.delete(&id, &owner).await? {
            true => Ok(()),
            false => Err(JobsError::not_found("file", &id)),
        }
    };
    let deleted = deleted.await;
    json_answer(deleted.map(|()| json!({"id": id, "object": "file", "deleted": true})))
}
