//! Uploads in the job store: a row per upload and per part, and each part's
//! bytes in `files_dir` under a temporary name (swept like any partial file
//! once stale) until `complete` joins them into a file of the Files store.

use serde_json::{Value as Json, json};
use tokio::io::AsyncReadExt;

use super::super::files::{FileRecord, NewFile, Upload as FileUpload};
use super::super::{Jobs, JobsError, Owner, new_sorted_id, unix_now};
use crate::infra::sql::{Row, Value};

/// An upload takes parts for an hour, as OpenAI's do.
pub const UPLOAD_SECONDS: i64 = 3600;

#[derive(Debug, Clone)]
pub struct UploadRecord {
    pub id: String,
    pub owner: String,
    pub org: Option<String>,
    pub filename: String,
    pub purpose: String,
    pub mime_type: String,
    pub bytes: i64,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The file's own expiry, from `expires_after`.
    pub file_expires_at: Option<i64>,
}

/// The columns read back; `file_id` (the joined file) is written for the
/// record only: the API has no call that reads an upload again.
const COLUMNS: &str = "id, owner, org, filename, purpose, mime_type, bytes, status, \
                       created_at, expires_at, file_expires_at";

impl UploadRecord {
    fn from_row(row: Row) -> Option<Self> {
        let mut values = row.into_iter();
        let mut next = || values.next().unwrap_or(Value::Null);
        Some(Self {
            id: next().into_text()?,
            owner: next().into_text()?,
            org: next().into_text(),
            filename: next().into_text()?,
            purpose: next().into_text()?,
            mime_type: next().into_text()?,
            bytes: next().int()?,
            status: next().into_text()?,
            created_at: next().int()?,
            expires_at: next().int()?,
            file_expires_at: next().int(),
        })
    }

    /// Pending past its hour, it is expired.
    fn status_now(&self) -> &str {
        if self.status == "pending" && self.expires_at <= unix_now() {
            "expired"
        } else {
            &self.status
        }
    }

    /// The OpenAI `upload` object, with its file once complete.
    pub fn to_json(&self, file: Option<&FileRecord>) -> Json {
        json!({
            "id": self.id,
            "object": "upload",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status_now(),
            "file": file.map(FileRecord::to_json),
        })
    }
}

/// What a new upload is.
pub struct NewUpload<'a> {
    pub owner: &'a Owner,
    pub filename: &'a str,
    pub purpose: &'a str,
    pub mime_type: &'a str,
    pub bytes: i64,
    pub file_expires_at: Option<i64>,
}

pub async fn create(jobs: &Jobs, new: NewUpload<'_>) -> Result<UploadRecord, JobsError> {
    let now = unix_now();
    let record = UploadRecord {
        id: new_sorted_id("upload_"),
        owner: new.owner.key_id.to_string(),
        org: new.owner.org.as_deref().map(str::to_owned),
        filename: new.filename.to_owned(),
        purpose: new.purpose.to_owned(),
        mime_type: new.mime_type.to_owned(),
        bytes: new.bytes,
        status: "pending".into(),
        created_at: now,
        expires_at: now + UPLOAD_SECONDS,
        file_expires_at: new.file_expires_at,
    };
    jobs.db
        .execute(
            &format!(
                "INSERT INTO sluice_uploads ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            vec![
                record.id.as_str().into(),
                record.owner.as_str().into(),
                record.org.clone().into(),
                record.filename.as_str().into(),
                record.purpose.as_str().into(),
                record.mime_type.as_str().into(),
                record.bytes.into(),
                record.status.as_str().into(),
                record.created_at.into(),
                record.expires_at.into(),
                record.file_expires_at.into(),
            ],
        )
        .await?;
    Ok(record)
}

/// The upload if `owner` may see it.
pub async fn get(jobs: &Jobs, id: &str, owner: &Owner) -> Result<UploadRecord, JobsError> {
    let row = jobs
        .db
        .query_one(
            &format!("SELECT {COLUMNS} FROM sluice_uploads WHERE id = $1"),
            vec![id.into()],
        )
        .await?;
    row.and_then(UploadRecord::from_row)
        .filter(|upload| {
            owner.sees(
                &upload.owner,
                upload.org.as_deref(),
                jobs.files.share_with_org(),
            )
        })
        .ok_or_else(|| JobsError::not_found("upload", id))
}

/// An upload still taking parts, or why it is not.
pub fn still_pending(upload: &UploadRecord) -> Result<(), JobsError> {
    match upload.status_now() {
        "pending" => Ok(()),
        status => Err(JobsError::Conflict(format!(
            "The upload {} is {status}; it takes no more parts.",
            upload.id
        ))),
    }
}

/// The parts' total bytes so far.
pub async fn part_bytes(jobs: &Jobs, upload_id: &str) -> Result<i64, JobsError> {
    let row = jobs
        .db
        .query_one(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM sluice_upload_parts WHERE upload_id = $1",
            vec![upload_id.into()],
        )
        .await?;
    Ok(row
        .and_then(|row| row.first().and_then(Value::int))
        .unwrap_or(0))
}

pub async fn add_part(
    jobs: &Jobs,
    upload_id: &str,
    part_id: &str,
    bytes: i64,
) -> Result<i64, JobsError> {
    let now = unix_now();
    jobs.db
        .execute(
            "INSERT INTO sluice_upload_parts (id, upload_id, bytes, created_at) VALUES ($1, $2, $3, $4)",
            vec![part_id.into(), upload_id.into(), bytes.into(), now.into()],
        )
        .await?;
    Ok(now)
}

/// Claims a pending upload for `complete` or `cancel`: only one of them,
/// on one replica, moves it on.
pub async fn claim(jobs: &Jobs, upload: &UploadRecord, to: &str) -> Result<(), JobsError> {
    let claimed = jobs
        .db
        .execute(
            "UPDATE sluice_uploads SET status = $2 WHERE id = $1 AND status = 'pending' AND expires_at > $3",
            vec![upload.id.as_str().into(), to.into(), unix_now().into()],
        )
        .await?;
    if claimed == 0 {
        return Err(JobsError::Conflict(format!(
            "The upload {} is no longer pending.",
            upload.id
        )));
    }
    Ok(())
}

pub async fn set_status(
    jobs: &Jobs,
    id: &str,
    status: &str,
    file_id: Option<&str>,
) -> Result<(), JobsError> {
    jobs.db
        .execute(
            "UPDATE sluice_uploads SET status = $2, file_id = $3 WHERE id = $1",
            vec![id.into(), status.into(), file_id.map(str::to_owned).into()],
        )
        .await?;
    Ok(())
}

/// The upload's parts as `(id, bytes)`.
pub async fn parts(jobs: &Jobs, upload_id: &str) -> Result<Vec<(String, i64)>, JobsError> {
    let rows = jobs
        .db
        .query(
            "SELECT id, bytes FROM sluice_upload_parts WHERE upload_id = $1",
            vec![upload_id.into()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let mut values = row.into_iter();
            Some((values.next()?.into_text()?, values.next()?.int()?))
        })
        .collect())
}

/// Drops the parts' rows and bytes (after a complete or a cancel).
pub async fn drop_parts(jobs: &Jobs, upload_id: &str) -> Result<(), JobsError> {
    for (part, _) in parts(jobs, upload_id).await? {
        let _ = tokio::fs::remove_file(jobs.files.scratch(&part)).await;
    }
    jobs.db
        .execute(
            "DELETE FROM sluice_upload_parts WHERE upload_id = $1",
            vec![upload_id.into()],
        )
        .await?;
    Ok(())
}

/// Joins the parts, in `order`, into a new file of the Files store,
/// checking the byte count (and the MD5, when given) first.
pub async fn join(
    jobs: &Jobs,
    upload: &UploadRecord,
    order: &[String],
    md5: Option<&str>,
    owner: &Owner,
) -> Result<FileRecord, JobsError> {
    let mut file = jobs.files.begin(upload.bytes.max(0) as u64).await?;
    let mut digest = md5.map(|_| <md5::Md5 as md5::Digest>::new());
    for part in order {
        if let Err(error) = copy_part(jobs, part, &mut file, digest.as_mut()).await {
            file.abandon().await;
            return Err(error);
        }
    }
    if file.written() != upload.bytes.max(0) as u64 {
        let written = file.written();
        file.abandon().await;
        return Err(JobsError::invalid(
            format!(
                "The parts hold {written} bytes; the upload was created for {}.",
                upload.bytes
            ),
            Some("part_ids"),
        ));
    }
    if let (Some(expected), Some(digest)) = (md5, digest) {
        let got = hex(&md5::Digest::finalize(digest));
        if !got.eq_ignore_ascii_case(expected.trim()) {
            file.abandon().await;
            return Err(JobsError::invalid(
                format!("The parts' MD5 is {got}, not the {expected} given."),
                Some("md5"),
            ));
        }
    }
    let new = NewFile {
        owner,
        purpose: &upload.purpose,
        filename: &upload.filename,
        expires_at: upload.file_expires_at,
    };
    jobs.files.finish(file, new).await
}

async fn copy_part(
    jobs: &Jobs,
    part: &str,
    file: &mut FileUpload,
    mut digest: Option<&mut md5::Md5>,
) -> Result<(), JobsError> {
    let mut bytes = tokio::fs::File::open(jobs.files.scratch(part))
        .await
        .map_err(JobsError::Storage)?;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = bytes.read(&mut buffer).await.map_err(JobsError::Storage)?;
        if read == 0 {
            return Ok(());
        }
        if let Some(digest) = digest.as_deref_mut() {
            md5::Digest::update(digest, &buffer[..read]);
        }
        file.write(&buffer[..read]).await?;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
