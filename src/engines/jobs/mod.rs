//! Work Sluice keeps and runs later, for any upstream: the Files API, the
//! Batch API (run here, line by line, through the internal adapter at the
//! `batch` class) and asynchronous requests (`Prefer: respond-async`).
//!
//! A deployment with `batch = "upstream"` takes its models' batches to the
//! provider's own Batch API instead (`batch::upstream`).
//!
//! Everything is recorded in one job store (`[batch] store`: SQLite by
//! default, PostgreSQL for a fleet) and file bytes in `[batch] files_dir`,
//! so a restarted replica, or another one, picks up where a runner stopped.
//!
//! - `db`: the SQL both stores share; `schema`: the tables.
//! - `files`: file records and bytes, and `/v1/files`.
//! - `batch`: batch records, input validation, the runner, `/v1/batches`.
//! - `asynchronous`: `Prefer: respond-async` jobs and `/v1/async/{id}`.
//!
//! Jobs sit beside the HTTP adapter: they enter the call pipeline through
//! `crate::engines::internal` with the identity of the key they serve.

pub mod asynchronous;
pub mod batch;
mod error;
pub mod files;
mod schema;
pub mod uploads;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{AsyncConfig, BatchConfig, Config, KeysStoreSpec};
use crate::engines::internal::InternalCalls;
use crate::infra::Shared;
use crate::infra::metrics::Metrics;
use crate::upstream::UpstreamClient;
use crate::util::tasks::Tasks;
use crate::vocab::Identity;

pub use error::JobsError;

use crate::infra::sql::{Db, Schema};
use files::Files;

/// Who owns a file, batch or job: the key that made it (by stable id) and
/// its org, which sees it too with `[batch] share_with_org`; or the
/// operator, through the admin API, who sees every key's.
#[derive(Debug, Clone)]
pub struct Owner {
    pub key_id: Arc<str>,
    pub org: Option<Arc<str>>,
    /// The admin API's caller: sees and cancels any key's batches.
    pub operator: bool,
}

impl Owner {
    pub fn of(identity: &Identity) -> Self {
        Self {
            key_id: identity.id.clone(),
            org: identity.org.clone(),
            operator: false,
        }
    }

    /// The admin API's caller, whom no key id names.
    pub fn operator() -> Self {
        Self {
            key_id: Arc::from(""),
            org: None,
            operator: true,
        }
    }

    /// The SQL condition for rows this caller sees, over the first three
    /// parameters, which `visibility_params` gives: `$2` is 0 for the
    /// key's own rows, 1 for its org's too, 2 for every row (the operator).
    pub const VISIBLE_ROWS: &'static str = "(owner = $1 OR ($2 = 1 AND org = $3) OR $2 = 2)";

    /// `$1..$3` of `VISIBLE_ROWS`.
    pub fn visibility_params(&self, share_with_org: bool) -> Vec<crate::infra::sql::Value> {
        let scope = match self.operator {
            true => 2,
            false => i64::from(share_with_org && self.org.is_some()),
        };
        vec![
            self.key_id.as_ref().into(),
            scope.into(),
            self.org.as_deref().unwrap_or("").into(),
        ]
    }

    /// Whether this caller may see an object owned by `key_id` of `org`.
    pub fn sees(&self, key_id: &str, org: Option<&str>, share_with_org: bool) -> bool {
        self.operator
            || *self.key_id == *key_id
            || (share_with_org && org.is_some() && self.org.as_deref() == org)
    }
}

/// A page of a list endpoint, in the API's list shape.
pub fn list_page(
    data: Vec<serde_json::Value>,
    first_id: Option<&str>,
    last_id: Option<&str>,
    has_more: bool,
) -> serde_json::Value {
    serde_json::json!({
        "object": "list",
        "data": data,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": has_more,
    })
}

/// A JSON handler's answer: 200 with the object, or the OpenAI-shaped error.
pub fn json_answer(result: Result<serde_json::Value, JobsError>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match result {
        Ok(value) => {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            crate::vocab::error::json_response(axum::http::StatusCode::OK, body.into())
        }
        Err(error) => error.into_response(),
    }
}

/// Seconds since the epoch, the API's timestamps.
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the epoch, for leases.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// `prefix` and 24 random lowercase letters and digits: ids clients hold,
/// not guessable (ownership is checked anyway).
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; 24];
    if getrandom::fill(&mut random).is_err() {
        random.iter_mut().for_each(|byte| *byte = fastrand::u8(..));
    }
    let mut id = String::with_capacity(prefix.len() + random.len());
    id.push_str(prefix);
    id.extend(
        random
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()])),
    );
    id
}

/// `prefix`, the time in milliseconds (9 base-36 digits) and 15 random
/// characters: ids made later sort after earlier ones, so lists ordered by
/// `(created_at, id)` are newest first even within one second (`created_at`
/// counts seconds).
pub fn new_sorted_id(prefix: &str) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut stamp = [b'0'; 9];
    let mut millis = unix_now_ms().max(0) as u64;
    for digit in stamp.iter_mut().rev() {
        *digit = DIGITS[(millis % 36) as usize];
        millis /= 36;
    }
    let random = new_id("");
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend(stamp.iter().map(|digit| char::from(*digit)));
    id.push_str(&random[..15]);
    id
}

/// The job store, file storage and runners of this replica.
pub struct Jobs {
    pub db: Db,
    pub files: Files,
    pub batch: BatchConfig,
    pub async_requests: AsyncConfig,
    /// The way into the call pipeline, with the snapshot in force.
    pub internal: Arc<dyn InternalCalls>,
    pub tasks: Tasks,
    pub metrics: Metrics,
    /// Talks to providers' Files and Batch APIs for forwarded batches.
    pub upstream: UpstreamClient,
    /// This replica's name on the leases it takes.
    pub replica: String,
    /// Wakes the batch runner when a batch is created or cancelled here.
    pub batch_wake: tokio::sync::Notify,
    /// Batch lines in flight on this replica, all batches together.
    pub line_permits: Arc<tokio::sync::Semaphore>,
    /// Wakes this replica's async runner when it accepts a job, so the job
    /// does not wait for the next poll.
    pub async_wake: tokio::sync::Notify,
    /// A key's batch creates on this replica run one at a time (striped by
    /// key), so its open-batch limit is counted exactly here.
    pub create_stripes: Vec<tokio::sync::Mutex<()>>,
}

/// Stripes of `Jobs::create_stripes`: keys share one only by hash.
const CREATE_STRIPES: usize = 16;

impl Jobs {
    /// Opens the job store named by `[batch] store`, or `None` when it is
    /// `"none"`. Runners start with `run`.
    pub fn open(
        config: &Config,
        internal: Arc<dyn InternalCalls>,
        shared: &Shared,
        upstream: &UpstreamClient,
    ) -> Result<Option<Arc<Self>>, String> {
        let (tasks, metrics) = (&shared.tasks, &shared.metrics);
        let data_dir = &config.usage.data_dir;
        let Some(spec) = KeysStoreSpec::parse_named(&config.batch.store, data_dir, "jobs.sqlite")?
        else {
            return Ok(None);
        };
        let schema = Schema {
            statements: schema::SCHEMA,
            added: schema::ADDED_COLUMNS,
            then: "",
        };
        let db = Db::open(&spec, schema, tasks).map_err(|error| error.to_string())?;
        let files_dir = config.batch.files_dir_in(data_dir);
        Ok(Some(Arc::new(Self {
            files: Files::new(db.clone(), files_dir, config.batch.share_with_org),
            db,
            batch: config.batch.clone(),
            async_requests: config.async_requests.clone(),
            internal,
            tasks: tasks.clone(),
            metrics: metrics.clone(),
            upstream: upstream.clone(),
            replica: new_id("replica-"),
            batch_wake: tokio::sync::Notify::new(),
            line_permits: Arc::new(tokio::sync::Semaphore::new(config.batch.max_concurrency)),
            async_wake: tokio::sync::Notify::new(),
            create_stripes: (0..CREATE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })))
    }

    /// The stripe that serialises `key_id`'s batch creates on this replica.
    pub fn create_stripe(&self, key_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key_id.hash(&mut hasher);
        &self.create_stripes[hasher.finish() as usize % self.create_stripes.len()]
    }

    /// Starts this replica's batch runner, asynchronous-job runner and the
    /// sweeper of expired files, until shutdown.
    pub fn run(self: &Arc<Self>) {
        let jobs = self.clone();
        self.tasks.spawn(async move {
            if let Err(error) = jobs.files.prepare().await {
                tracing::warn!(%error, "files directory not usable");
            }
        });
        batch::runner::start(self);
        asynchronous::start(self);
        self.sweep_expired_files();
    }

    fn sweep_expired_files(self: &Arc<Self>) {
        let jobs = self.clone();
        self.tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    () = jobs.tasks.stopping() => return,
                }
                match jobs.files.sweep_expired(1000).await {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(removed, "expired files deleted"),
                    Err(error) => tracing::warn!(%error, "expired files not swept"),
                }
            }
        });
    }

    /// The identity of the key `key_id` in the config in force, acting as
    /// the caller of work Sluice runs for it; `None` once it is gone.
    pub fn identity_of(&self, key_id: &str) -> Option<Arc<Identity>> {
        self.internal.identity(key_id)
    }
}

/// The keyset condition of a list page ordered by `(created_at, id)`: rows
/// past the one of `table` whose id is parameter `$param`. Without a cursor
/// the parameter is still used, so both dialects number the rest alike.
pub fn page_cursor(table: &str, param: usize, after: bool, descending: bool) -> String {
    if !after {
        return format!("AND CAST(${param} AS TEXT) = CAST(${param} AS TEXT)");
    }
    let compare = if descending { "<" } else { ">" };
    format!(
        "AND (created_at, id) {compare} (SELECT created_at, id FROM {table} WHERE id = ${param})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_ids_sort_by_creation_and_stay_unguessable() {
        let first = new_sorted_id("batch_");
        std::thread::sleep(Duration::from_millis(2));
        let second = new_sorted_id("batch_");
        assert!(first < second, "{first} !< {second}");
        assert_eq!(second.len(), "batch_".len() + 24);
        assert_ne!(new_sorted_id("f")[10..], new_sorted_id("f")[10..]);
    }
}
