//! An asynchronous job as stored, and the statements that move it along.
//! Every change is one compare-and-set statement: replicas race for jobs
//! on a shared store, and the one whose lease a row names is the only one
//! whose answer is recorded.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::super::JobsError;
use crate::infra::sql::{Db, Row, Value};

/// Where a job stands; the API's `status` strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    InProgress,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Queued, Self::InProgress, Self::Completed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// A callback still to deliver; `delivered` and `failed` are final.
pub const CALLBACK_PENDING: &str = "pending";
pub const CALLBACK_DELIVERED: &str = "delivered";
pub const CALLBACK_FAILED: &str = "failed";

/// The columns `Job::from_row` reads, in order.
const COLUMNS: &str = "id, owner, status, path, headers, body, callback, callback_state, \
     response_status, response_type, response_body, response_base64, created_at, completed_at, \
     expires_at";

/// The answer a job ends with.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// The stable id of the key that asked.
    pub owner: String,
    pub status: Status,
    /// The API path and query to replay, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The replayed headers, as a JSON object of strings.
    pub headers: String,
    pub body: String,
    pub callback: Option<String>,
    pub callback_state: Option<String>,
    pub answer: Option<Answer>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub expires_at: i64,
}

impl Job {
    fn from_row(row: Row) -> Option<Self> {
        let mut values = row.into_iter();
        let mut next = || values.next().unwrap_or(Value::Null);
        let id = next().into_text()?;
        let owner = next().into_text()?;
        let status = Status::parse(next().text()?)?;
        let path = next().into_text()?;
        let headers = next().into_text()?;
        let body = next().into_text()?;
        let callback = next().into_text();
        let callback_state = next().into_text();
        let response_status = next().int();
        let content_type = next().into_text();
        let response_body = next().into_text();
        let base64 = next().int() == Some(1);
        let answer = match (response_status, response_body) {
            (Some(status), Some(body)) => Some(Answer {
                status: u16::try_from(status).ok()?,
                content_type,
                body: decode_body(body, base64)?,
            }),
            _ => None,
        };
        Some(Self {
            id,
            owner,
            status,
            path,
            headers,
            body,
            callback,
            callback_state,
            answer,
            created_at: next().int()?,
            completed_at: next().int(),
            expires_at: next().int()?,
        })
    }

    /// Where the client polls for it.
    pub fn url(&self) -> String {
        format!("/v1/async/{}", self.id)
    }

    /// The `async_request` object: what the 202, a poll and a callback show.
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "object": "async_request",
            "status": self.status.as_str(),
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "url": self.url(),
        })
    }

    /// The replayed headers, as stored.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        serde_json::from_str::<serde_json::Map<String, Json>>(&self.headers)
            .map(|map| {
                map.into_iter()
                    .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A body stored as text: UTF-8 as is, anything else (audio) in base64.
fn encode_body(body: &[u8]) -> (String, i64) {
    match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), 0),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), 1),
    }
}

fn decode_body(text: String, base64: bool) -> Option<Bytes> {
    if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .map(Bytes::from)
    } else {
        Some(Bytes::from(text))
    }
}

/// Records a new job, queued.
pub async fn insert(db: &Db, job: &Job) -> Result<(), JobsError> {
    db.execute(
        "INSERT INTO sluice_async_jobs (id, owner, status, path, headers, body, callback, \
         callback_state, response_base64, created_at, expires_at, lease_until, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, 0, 0)",
        vec![
            job.id.as_str().into(),
            job.owner.as_str().into(),
            job.status.as_str().into(),
            job.path.as_str().into(),
            job.headers.as_str().into(),
            job.body.as_str().into(),
            job.callback.clone().into(),
            job.callback_state.clone().into(),
            job.created_at.into(),
            job.expires_at.into(),
        ],
    )
    .await?;
    Ok(())
}

/// The job with `id`, whoever owns it, expired or not.
pub async fn load(db: &Db, id: &str) -> Result<Option<Job>, JobsError> {
    let row = db
        .query_one(
            &format!("SELECT {COLUMNS} FROM sluice_async_jobs WHERE id = $1"),
            vec![id.into()],
        )
        .await?;
    Ok(row.and_then(Job::from_row))
}

/// How many jobs of `owner` wait or run.
pub async fn open_jobs(db: &Db, owner: &str) -> Result<i64, JobsError> {
    let row = db
        .query_one(
            "SELECT COUNT(*) FROM sluice_async_jobs WHERE owner = $1 AND status <> 'completed'",
            vec![owner.into()],
        )
        .await?;
    Ok(row
        .and_then(|row| row.first().and_then(|value| value.int()))
        .unwrap_or(0))
}

/// Up to `limit` jobs with work left (to run, or a callback to deliver)
/// that no live lease holds, oldest first.
pub async fn claimable(db: &Db, now_ms: i64, limit: usize) -> Result<Vec<String>, JobsError> {
    let rows = db
        .query(
            "SELECT id FROM sluice_async_jobs WHERE lease_until < $1 AND expires_at > $2 \
             AND (status <> 'completed' OR callback_state = 'pending') \
             ORDER BY created_at LIMIT $3",
            vec![
                now_ms.into(),
                (now_ms / 1000).into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.into_iter().next()?.into_text())
        .collect())
}

/// Takes the job for `runner` until `lease_until` if no live lease holds
/// it; a job not yet answered becomes `in_progress` (and counts a run).
pub async fn claim(db: &Db, id: &str, runner: &str, lease_until: i64) -> Result<bool, JobsError> {
    let now_ms = super::super::unix_now_ms();
    let changed = db
        .execute(
            "UPDATE sluice_async_jobs SET runner = $1, lease_until = $2, \
             attempts = attempts + CASE WHEN status = 'completed' THEN 0 ELSE 1 END, \
             status = CASE WHEN status = 'completed' THEN status ELSE 'in_progress' END \
             WHERE id = $3 AND lease_until < $4 \
             AND (status <> 'completed' OR callback_state = 'pending')",
            vec![runner.into(), lease_until.into(), id.into(), now_ms.into()],
        )
        .await?;
    Ok(changed == 1)
}

/// Extends `runner`'s lease; `false` once another runner holds the job.
pub async fn heartbeat(
    db: &Db,
    id: &str,
    runner: &str,
    lease_until: i64,
) -> Result<bool, JobsError> {
    let changed = db
        .execute(
            "UPDATE sluice_async_jobs SET lease_until = $1 WHERE id = $2 AND runner = $3",
            vec![lease_until.into(), id.into(), runner.into()],
        )
        .await?;
    Ok(changed == 1)
}

/// The lease of a job with nothing left to do: past every `now`, so the
/// runners' claim query (an index range on `lease_until`) never reads it.
const FINISHED: i64 = i64::MAX;

/// Records the answer, if `runner` still holds the job and nobody
/// answered it: exactly one answer is ever stored.
pub async fn complete(db: &Db, id: &str, runner: &str, answer: &Answer) -> Result<bool, JobsError> {
    let mut params = answer_params(answer);
    params.extend([id.into(), runner.into(), FINISHED.into()]);
    let changed = db
        .execute(
            "UPDATE sluice_async_jobs SET status = 'completed', response_status = $1, \
             response_type = $2, response_body = $3, response_base64 = $4, completed_at = $5, \
             lease_until = CASE WHEN COALESCE(callback_state, '') = 'pending' THEN lease_until \
             ELSE $8 END \
             WHERE id = $6 AND runner = $7 AND status = 'in_progress'",
            params,
        )
        .await?;
    Ok(changed == 1)
}

/// `$1..$5` of a statement that stores an answer: its status, content
/// type, body (and whether in base64), and now as its completion time.
fn answer_params(answer: &Answer) -> Vec<Value> {
    let (body, base64) = encode_body(&answer.body);
    vec![
        i64::from(answer.status).into(),
        answer.content_type.clone().into(),
        body.into(),
        base64.into(),
        super::super::unix_now().into(),
    ]
}

/// Records how the callback ended (`delivered` or `failed`) and lets the
/// job go.
pub async fn callback_done(db: &Db, id: &str, runner: &str, state: &str) -> Result<(), JobsError> {
    db.execute(
        "UPDATE sluice_async_jobs SET callback_state = $1, runner = NULL, lease_until = $4 \
         WHERE id = $2 AND runner = $3",
        vec![state.into(), id.into(), runner.into(), FINISHED.into()],
    )
    .await?;
    Ok(())
}

/// Gives a job back at shutdown: another runner (or this one restarted)
/// takes it at once instead of after the lease.
pub async fn release(db: &Db, id: &str, runner: &str) -> Result<(), JobsError> {
    db.execute(
        "UPDATE sluice_async_jobs SET runner = NULL, \
         lease_until = CASE WHEN status = 'completed' AND COALESCE(callback_state, '') <> 'pending' \
         THEN CAST($3 AS BIGINT) ELSE 0 END, \
         status = CASE WHEN status = 'in_progress' THEN 'queued' ELSE status END \
         WHERE id = $1 AND runner = $2",
        vec![id.into(), runner.into(), FINISHED.into()],
    )
    .await?;
    Ok(())
}

/// Gives a claimed, unanswered job back to the queue, not to be claimed
/// again before `not_before` (unix ms): its model is in maintenance.
pub async fn defer(db: &Db, id: &str, runner: &str, not_before: i64) -> Result<(), JobsError> {
    db.execute(
        "UPDATE sluice_async_jobs SET runner = NULL, lease_until = $3, status = 'queued' \
         WHERE id = $1 AND runner = $2 AND status = 'in_progress'",
        vec![id.into(), runner.into(), not_before.into()],
    )
    .await?;
    Ok(())
}

/// A page of every key's jobs not yet expired, newest first, past `after`
/// (a job id); and whether more follow.
pub async fn page(
    db: &Db,
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<Job>, bool), JobsError> {
    let cursor = super::super::page_cursor("sluice_async_jobs", 2, after.is_some(), true);
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM sluice_async_jobs WHERE expires_at > $1 {cursor} \
                 ORDER BY created_at DESC, id DESC LIMIT $3"
            ),
            vec![
                super::super::unix_now().into(),
                after.unwrap_or_default().into(),
                i64::try_from(limit + 1).unwrap_or(i64::MAX).into(),
            ],
        )
        .await?;
    let mut jobs: Vec<Job> = rows.into_iter().filter_map(Job::from_row).collect();
    let has_more = jobs.len() > limit;
    jobs.truncate(limit);
    Ok((jobs, has_more))
}

/// Ends a job not yet answered with `answer`, whoever runs it: the runner
/// loses its lease (and drops the call at its next renewal), and its own
/// answer, should it come, is not stored. A pending callback still goes.
pub async fn cancel(db: &Db, id: &str, answer: &Answer) -> Result<bool, JobsError> {
    let mut params = answer_params(answer);
    params.extend([id.into(), FINISHED.into()]);
    let changed = db
        .execute(
            "UPDATE sluice_async_jobs SET status = 'completed', response_status = $1, \
             response_type = $2, response_body = $3, response_base64 = $4, completed_at = $5, \
             runner = NULL, \
             lease_until = CASE WHEN COALESCE(callback_state, '') = 'pending' THEN 0 \
             ELSE CAST($7 AS BIGINT) END \
             WHERE id = $6 AND status <> 'completed'",
            params,
        )
        .await?;
    Ok(changed == 1)
}

/// Deletes up to `limit` jobs past their expiry; how many went.
pub async fn sweep_expired(db: &Db, now: i64, limit: usize) -> Result<u64, JobsError> {
    Ok(db
        .execute(
            "DELETE FROM sluice_async_jobs WHERE id IN \
             (SELECT id FROM sluice_async_jobs WHERE expires_at <= $1 LIMIT $2)",
            vec![now.into(), i64::try_from(limit).unwrap_or(i64::MAX).into()],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_text_round_trip_through_base64() {
        for body in [&b"{\"a\":1}"[..], &[0xff, 0x00, 0x9f][..]] {
            let (text, base64) = encode_body(body);
            assert_eq!(decode_body(text, base64 == 1).unwrap(), body);
        }
    }

    fn job(id: &str, expires_at: i64) -> Job {
        Job {
            id: id.to_owned(),
            owner: "key-1".to_owned(),
            status: Status::Queued,
            path: "/v1/chat/completions".to_owned(),
            headers: "{}".to_owned(),
            body: "{}".to_owned(),
            callback: None,
            callback_state: None,
            answer: None,
            created_at: 0,
            completed_at: None,
            expires_at,
        }
    }

    #[tokio::test]
    async fn the_sweep_deletes_expired_jobs_only_and_at_most_its_limit() {
        let dir = std::env::temp_dir().join(format!("sluice-async-sweep-{}", fastrand::u64(..)));
        let spec = crate::config::KeysStoreSpec::Sqlite(dir.join("jobs.sqlite"));
        let tasks = crate::util::tasks::Tasks::new();
        let schema = crate::infra::sql::Schema {
            statements: crate::engines::jobs::schema::SCHEMA,
            added: &[],
            then: "",
        };
        let db = Db::open(&spec, schema, &tasks).unwrap();
        for (id, expires_at) in [
            ("old-1", 100),
            ("old-2", 200),
            ("old-3", 300),
            ("live", 1000),
        ] {
            insert(&db, &job(id, expires_at)).await.unwrap();
        }
        assert_eq!(sweep_expired(&db, 300, 2).await.unwrap(), 2);
        assert_eq!(sweep_expired(&db, 300, 2).await.unwrap(), 1);
        assert_eq!(sweep_expired(&db, 300, 2).await.unwrap(), 0);
        assert!(load(&db, "old-3").await.unwrap().is_none());
        assert!(load(&db, "live").await.unwrap().is_some());
        std::fs::remove_dir_all(dir).ok();
    }
}
