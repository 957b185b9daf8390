//! Files: a row in the job store and the bytes in `files_dir/<id>`. Bytes
//! are written to a temporary name and renamed into place before the row is
//! inserted, so a listed file always has all of its bytes; a crash leaves at
//! most an orphan temporary file, swept at a later start once it is stale.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::AsyncWriteExt;

use super::super::page_cursor;
use super::super::{JobsError, Owner, new_sorted_id, unix_now};
use crate::infra::sql::{Db, Row, Value};

/// Prefix of files being written; never listed, swept at start-up.
const PARTIAL: &str = ".partial-";

#[derive(Debug, Clone)]
pub struct FileRecord {
    pub id: String,
    pub owner: String,
    pub org: Option<String>,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

const COLUMNS: &str = "id, owner, org, purpose, filename, bytes, created_at, expires_at";

impl FileRecord {
    fn from_row(row: Row) -> Option<Self> {
        let mut values = row.into_iter();
        let mut next = || values.next().unwrap_or(Value::Null);
        Some(Self {
            id: next().into_text()?,
            owner: next().into_text()?,
            org: next().into_text(),
            purpose: next().into_text()?,
            filename: next().into_text()?,
            bytes: next().int()?,
            created_at: next().int()?,
            expires_at: next().int(),
        })
    }

    /// The OpenAI `file` object. `expires_at` only when the file expires
    /// (the spec's field is an integer, never null); no `status_details`
    /// (deprecated, and a string where present).
    pub fn to_json(&self) -> Json {
        let mut file = json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        });
        if let Some(expires_at) = self.expires_at {
            file["expires_at"] = expires_at.into();
        }
        file
    }
}

/// What a new file is.
pub struct NewFile<'a> {
    pub owner: &'a Owner,
    pub purpose: &'a str,
    pub filename: &'a str,
    pub expires_at: Option<i64>,
}

/// A file being written: bytes go to a temporary name until `finish`.
pub struct Upload {
    id: String,
    partial: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    written: u64,
    limit: u64,
}

impl Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), JobsError> {
        self.written += chunk.len() as u64;
        if self.written > self.limit {
            return Err(JobsError::TooLarge { limit: self.limit });
        }
        self.file.write_all(chunk).await.map_err(JobsError::Storage)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Throws the partial bytes away (a refused or broken upload).
    pub async fn abandon(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.partial).await;
    }
}

/// A temporary file untouched this long belongs to no live writer.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);

/// Whether a temporary file was last written `STALE_PARTIAL` ago or more.
async fn is_stale(entry: &tokio::fs::DirEntry) -> bool {
    let modified = entry.metadata().await.and_then(|meta| meta.modified());
    modified.is_ok_and(|at| at.elapsed().is_ok_and(|age| age >= STALE_PARTIAL))
}

pub struct Files {
    db: Db,
    dir: PathBuf,
    /// Files and batches are visible to the creator's whole org.
    share_with_org: bool,
}

impl Files {
    pub fn new(db: Db, dir: PathBuf, share_with_org: bool) -> Self {
        Self {
            db,
            dir,
            share_with_org,
        }
    }

    pub fn share_with_org(&self) -> bool {
        self.share_with_org
    }

    /// Where a file's bytes are.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Creates the directory and removes temporary files a crash left:
    /// only stale ones, as uploads (here, started before this ran, or on
    /// another replica sharing the directory) write theirs right now.
    pub async fn prepare(&self) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_name().to_string_lossy().starts_with(PARTIAL) && is_stale(&entry).await {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
        Ok(())
    }

    /// Starts writing a new file of at most `limit` bytes under `prefix`
    /// (`file`); `finish` makes it visible.
    pub async fn begin(&self, limit: u64) -> Result<Upload, JobsError> {
        let id = new_sorted_id("file-");
        let partial = self.dir.join(format!("{PARTIAL}{id}"));
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(JobsError::Storage)?;
        let file = tokio::fs::File::create(&partial)
            .await
            .map_err(JobsError::Storage)?;
        Ok(Upload {
            id,
            partial,
            file: tokio::io::BufWriter::with_capacity(64 * 1024, file),
            written: 0,
            limit,
        })
    }

    /// Flushes the bytes to disk, moves them into place and records the file.
    pub async fn finish(
        &self,
        mut upload: Upload,
        new: NewFile<'_>,
    ) -> Result<FileRecord, JobsError> {
        let stored = async {
            upload.file.flush().await?;
            upload.file.get_ref().sync_all().await?;
            tokio::fs::rename(&upload.partial, self.path(&upload.id)).await
        }
        .await;
        if let Err(error) = stored {
            upload.abandon().await;
            return Err(JobsError::Storage(error));
        }
        let record = FileRecord {
            id: upload.id,
            owner: new.owner.key_id.to_string(),
            org: new.owner.org.as_deref().map(str::to_owned),
            purpose: new.purpose.to_owned(),
            filename: new.filename.to_owned(),
            bytes: upload.written as i64,
            created_at: unix_now(),
            expires_at: new.expires_at,
        };
        self.insert(&record).await?;
        Ok(record)
    }

    /// Writes a whole file the gateway makes (a batch's output) under a
    /// known id; writing it again (a finalize that was interrupted) replaces
    /// the bytes and keeps the row.
    pub async fn put(&self, record: &FileRecord, bytes: &Path) -> Result<(), JobsError> {
        tokio::fs::rename(bytes, self.path(&record.id))
            .await
            .map_err(JobsError::Storage)?;
        self.insert(record).await
    }

    async fn insert(&self, record: &FileRecord) -> Result<(), JobsError> {
        self.db
            .execute(
                &format!(
                    "INSERT INTO sluice_files ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes"
                ),
                vec![
                    record.id.as_str().into(),
                    record.owner.as_str().into(),
                    record.org.clone().into(),
                    record.purpose.as_str().into(),
                    record.filename.as_str().into(),
                    record.bytes.into(),
                    record.created_at.into(),
                    record.expires_at.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// A temporary path in the files directory, for a file being built.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{PARTIAL}{name}"))
    }

    /// The file if `owner` may see it (and it has not expired).
    pub async fn get(&self, id: &str, owner: &Owner) -> Result<Option<FileRecord>, JobsError> {
        let row = self
            .db
            .query_one(
                &format!(
                    "SELECT {COLUMNS} FROM sluice_files WHERE id = $1 \
                     AND (expires_at IS NULL OR expires_at > $2)"
                ),
                vec![id.into(), unix_now().into()],
            )
            .await?;
        Ok(row
            .and_then(FileRecord::from_row)
            .filter(|file| owner.sees(&file.owner, file.org.as_deref(), self.share_with_org)))
    }

    /// One page of `owner`'s files: `after` an id, oldest or newest first.
    /// Bytes the key `owner` keeps now: its files, and the inputs it
    /// deleted that its open batches still read (kept on disk until they
    /// close, at most `max_open_batches_per_key` of them).
    pub async fn stored_bytes(&self, owner: &str) -> Result<u64, JobsError> {
        let row = self
            .db
            .query_one(
                "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM sluice_files \
                 WHERE owner = $1 AND (expires_at IS NULL OR expires_at > $2)",
                vec![owner.into(), unix_now().into()],
            )
            .await?;
        let listed = row.and_then(|row| row.first().and_then(Value::int));
        let mut bytes = listed.map_or(0, |bytes| bytes.max(0) as u64);
        let held = self
            .db
            .query(
                "SELECT DISTINCT input_file_id FROM sluice_batches WHERE owner = $1 \
                 AND status IN ('validating', 'in_progress', 'finalizing', 'cancelling') \
                 AND input_file_id NOT IN (SELECT id FROM sluice_files)",
                vec![owner.into()],
            )
            .await?;
        for id in held
            .into_iter()
            .filter_map(|row| row.into_iter().next()?.into_text())
        {
            if let Ok(file) = tokio::fs::metadata(self.path(&id)).await {
                bytes = bytes.saturating_add(file.len());
            }
        }
        Ok(bytes)
    }

    pub async fn list(
        &self,
        owner: &Owner,
        page: &FilePage,
    ) -> Result<(Vec<FileRecord>, bool), JobsError> {
        let order = if page.descending { "DESC" } else { "ASC" };
        let cursor = page_cursor("sluice_files", 5, page.after.is_some(), page.descending);
        let visible = Owner::VISIBLE_ROWS;
        let sql = format!(
            "SELECT {COLUMNS} FROM sluice_files \
             WHERE {visible} AND (expires_at IS NULL OR expires_at > $4) \
             AND ($6 = '' OR purpose = $6) {cursor} ORDER BY created_at {order}, id {order} LIMIT $7"
        );
        let mut params = owner.visibility_params(self.share_with_org);
        params.extend([
            unix_now().into(),
            page.after.clone().unwrap_or_default().into(),
            page.purpose.clone().unwrap_or_default().into(),
            (page.limit as i64 + 1).into(),
        ]);
        let rows = self.db.query(&sql, params).await?;
        let mut files: Vec<FileRecord> =
            rows.into_iter().filter_map(FileRecord::from_row).collect();
        let has_more = files.len() > page.limit;
        files.truncate(page.limit);
        Ok((files, has_more))
    }

    /// Deletes the row, then the bytes; `false` when `owner` has no such file.
    pub async fn delete(&self, id: &str, owner: &Owner) -> Result<bool, JobsError> {
        if self.get(id, owner).await?.is_none() {
            return Ok(false);
        }
        self.remove(id).await?;
        Ok(true)
    }

    /// Deletes the row, then the bytes, unless an open batch reads them: a
    /// runner that resumes it (after a restart, on another replica) could
    /// not open its input and the batch would stay open for ever. Its
    /// runner removes them once it closes (`release_input`).
    async fn remove(&self, id: &str) -> Result<(), JobsError> {
        self.db
            .execute("DELETE FROM sluice_files WHERE id = $1", vec![id.into()])
            .await?;
        if self.read_by_open_batch(id).await? {
            return Ok(());
        }
        self.remove_bytes(id).await
    }

    async fn read_by_open_batch(&self, id: &str) -> Result<bool, JobsError> {
        let row = self
            .db
            .query_one(
                "SELECT id FROM sluice_batches WHERE input_file_id = $1 AND status IN \
                 ('validating', 'in_progress', 'finalizing', 'cancelling') LIMIT 1",
                vec![id.into()],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Removes the bytes of a closed batch's input file if the file was
    /// deleted (or expired) while the batch ran.
    pub async fn release_input(&self, id: &str) -> Result<(), JobsError> {
        let row = self
            .db
            .query_one("SELECT id FROM sluice_files WHERE id = $1", vec![id.into()])
            .await?;
        if row.is_none() && !self.read_by_open_batch(id).await? {
            self.remove_bytes(id).await?;
        }
        Ok(())
    }

    async fn remove_bytes(&self, id: &str) -> Result<(), JobsError> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(JobsError::Storage(error))
            }
            _ => Ok(()),
        }
    }

    /// Deletes up to `limit` files past their expiry; how many went.
    pub async fn sweep_expired(&self, limit: i64) -> Result<usize, JobsError> {
        let rows = self
            .db
            .query(
                "SELECT id FROM sluice_files WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2",
                vec![unix_now().into(), limit.into()],
            )
            .await?;
        let mut removed = 0;
        for row in rows {
            if let Some(Value::Text(id)) = row.into_iter().next() {
                self.remove(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// `GET /v1/files` paging.
pub struct FilePage {
    pub after: Option<String>,
    pub limit: usize,
    pub descending: bool,
    pub purpose: Option<String>,
}
