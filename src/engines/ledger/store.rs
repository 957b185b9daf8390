//! Where records are written: SQLite (embedded, the default) or PostgreSQL
//! (fleets). Both create their table at start-up; both aggregate for reports.

use std::path::PathBuf;
use std::sync::Arc;

use super::record::{COLUMNS, Texts, Total, UsageRecord, VALUES_PER_ROW, group_column};
use crate::config::KeysStoreSpec;
use crate::engines::metering::{Period, from_unix_ms};
use crate::infra::sql::{Db, DbError, Dialect, Schema, Value};
use crate::util::tasks::Tasks;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sluice_usage (
    record_id TEXT, at_ms BIGINT NOT NULL, request_id TEXT NOT NULL, upstream_request_id TEXT, trace_id TEXT, key TEXT NOT NULL, key_id TEXT, org TEXT,
    model_requested TEXT NOT NULL, model TEXT NOT NULL, deployment TEXT NOT NULL,
    priority TEXT NOT NULL, cache TEXT NOT NULL, tag TEXT,
    prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL, latency_ms BIGINT NOT NULL, status BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL, day TEXT NOT NULL, api TEXT)";
const INDEX: &str = "CREATE INDEX IF NOT EXISTS sluice_usage_at ON sluice_usage (at_ms)";
/// Columns added after the first release: a table made before them gets
/// them (NULL in old rows).
const ADDED_COLUMNS: [(&str, &str); 5] = [
    ("sluice_usage", "record_id TEXT"),
    ("sluice_usage", "upstream_request_id TEXT"),
    ("sluice_usage", "key_id TEXT"),
    ("sluice_usage", "trace_id TEXT"),
    ("sluice_usage", "api TEXT"),
];
/// What makes a write idempotent: a batch written twice (its commit
/// acknowledgement lost, or replayed from the journal) adds no rows. Old
/// rows' NULLs do not collide.
const UNIQUE_ID: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS sluice_usage_record_id ON sluice_usage (record_id)";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store failed or is unreachable: worth retrying.
    #[error("usage store: {0}")]
    Unavailable(String),
    /// A report asked for a grouping that does not exist.
    #[error("cannot group by `{0}`")]
    UnknownGroup(String),
}

fn err(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        err(error)
    }
}

pub enum Store {
    /// SQLite or PostgreSQL, on the shared SQL layer.
    Sql(Db),
    #[cfg(test)]
    Flaky(Arc<flaky::Flaky>),
}

/// One record's values in `COLUMNS` order, then its day: the same list for
/// both stores, whose parameter traits differ. `$t` is the record's `Texts`.
macro_rules! row_values {
    ($r:expr, $t:expr, $day:expr) => {
        [
            &$t.id,
            &$r.at_ms,
            &$t.request_id,
            &$t.upstream_request_id,
            &$t.trace_id,
            &$t.key,
            &$t.key_id,
            &$t.org,
            &$t.model_requested,
            &$t.model,
            &$t.deployment,
            &$t.priority,
            &$t.cache,
            &$t.tag,
            &$r.prompt_tokens,
            &$r.completion_tokens,
            &$r.cached_tokens,
            &$r.cost_usd,
            &$r.latency_ms,
            &$r.status,
            &$r.estimated,
            &$t.api,
            $day,
        ]
    };
}

/// Longest a usage report may take: a store that hangs (a network
/// partition) answers 503 like one that refuses.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Rows per SQLite `INSERT`: one statement per many rows costs far less
/// CPU than one per row (21 parameters each; SQLite allows 32,766).
const ROWS_PER_INSERT: usize = 64;

/// Splits a batch into statements of 64, 32, ... 1 rows, so a handful of
/// prepared statements serve every batch size from the statement cache
/// (each row count is its own SQL text; rusqlite caches 16).
fn insert_chunks(mut rows: &[UsageRecord]) -> impl Iterator<Item = &[UsageRecord]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = ROWS_PER_INSERT.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// Inserts `rows`; how many were new (a replayed record already stored is
/// skipped, not counted).
fn insert_rows(tx: &rusqlite::Transaction<'_>, rows: &[UsageRecord]) -> Result<u64, StoreError> {
    let row = format!("({})", vec!["?"; VALUES_PER_ROW].join(","));
    let placeholders = vec![row.as_str(); rows.len()].join(",");
    let mut insert = tx
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO sluice_usage ({COLUMNS}, day) VALUES {placeholders}"
        ))
        .map_err(err)?;
    let days = days_of(rows);
    let texts: Vec<Texts<'_>> = rows.iter().map(UsageRecord::texts).collect();
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * VALUES_PER_ROW);
    for ((r, t), day) in rows.iter().zip(&texts).zip(&days) {
        let row: [&dyn rusqlite::ToSql; VALUES_PER_ROW] = row_values!(r, t, day);
        params.extend_from_slice(&row);
    }
    let inserted = insert.execute(params.as_slice()).map_err(err)?;
    Ok(inserted as u64)
}

/// `YYYY-MM-DD` (UTC) of each record, for `group_by=day`; formatted once
/// per day in the batch, not once per record.
fn days_of(records: &[UsageRecord]) -> Vec<Arc<str>> {
    let mut last: Option<(i64, Arc<str>)> = None;
    records
        .iter()
        .map(|r| {
            let at = from_unix_ms(r.at_ms);
            let day = Period::Day.index(at);
            match &last {
                Some((cached, name)) if *cached == day => name.clone(),
                _ => {
                    let name: Arc<str> = Period::Day.name(at).into();
                    last = Some((day, name.clone()));
                    name
                }
            }
        })
        .collect()
}

impl Store {
    /// Opens the store at start-up. SQLite opens (and migrates) now;
    /// PostgreSQL connects and migrates on first use, so a database that is
    /// down at start-up only delays writes (records wait in the buffer).
    pub fn open(store: &str, data_dir: &str, tasks: &Tasks) -> Result<Self, StoreError> {
        let spec = match store {
            "sqlite" => KeysStoreSpec::Sqlite(PathBuf::from(data_dir).join("usage.db")),
            url => KeysStoreSpec::Postgres(url.to_owned()),
        };
        let statements = format!("{SCHEMA}; {INDEX};");
        let schema = Schema {
            statements: &statements,
            added: &ADDED_COLUMNS,
            then: UNIQUE_ID,
        };
        Ok(Self::Sql(Db::open(&spec, schema, tasks)?))
    }

    /// Connects and creates the table now (PostgreSQL; SQLite did at open).
    pub async fn prepare(&self) -> Result<(), StoreError> {
        match self {
            Self::Sql(db) => Ok(db.prepare().await?),
            #[cfg(test)]
            Self::Flaky(_) => Ok(()),
        }
    }

    /// Writes a batch; how many of its records were new. Records already
    /// stored (replayed from the journal after a crash) are skipped.
    pub async fn write(&self, records: Arc<Vec<UsageRecord>>) -> Result<u64, StoreError> {
        match self {
            Self::Sql(db) if db.dialect() == Dialect::Sqlite => Ok(db
                .with_sqlite(move |connection| {
                    let tx = connection.transaction().map_err(db_unavailable)?;
                    let mut inserted = 0;
                    for rows in insert_chunks(&records) {
                        inserted += insert_rows(&tx, rows).map_err(db_unavailable)?;
                    }
                    tx.commit().map_err(db_unavailable)?;
                    Ok(inserted)
                })
                .await?),
            Self::Sql(db) => write_postgres(db, &records).await,
            #[cfg(test)]
            Self::Flaky(flaky) => flaky.write(&records),
        }
    }

    /// Totals grouped by `group_by`, between two unix-millisecond times;
    /// a store that does not answer within `REPORT_TIMEOUT` is unavailable.
    pub async fn totals(
        &self,
        group_by: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Total>, StoreError> {
        let column = group_column(group_by)
            .ok_or_else(|| StoreError::UnknownGroup(group_by.chars().take(64).collect()))?;
        tokio::time::timeout(REPORT_TIMEOUT, self.query_totals(column, from_ms, to_ms))
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("report timed out".into())))
    }

    async fn query_totals(
        &self,
        column: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Total>, StoreError> {
        let db = match self {
            Self::Sql(db) => db,
            #[cfg(test)]
            Self::Flaky(_) => return Ok(Vec::new()),
        };
        let sql = format!(
            "SELECT {column}, COUNT(*), CAST(SUM(prompt_tokens) AS BIGINT), CAST(SUM(completion_tokens) AS BIGINT),
                    CAST(SUM(cached_tokens) AS BIGINT), CAST(SUM(cost_usd) AS DOUBLE PRECISION)
             FROM sluice_usage WHERE at_ms >= $1 AND at_ms < $2
             GROUP BY {column} ORDER BY {column}"
        );
        let rows = db.query(&sql, vec![from_ms.into(), to_ms.into()]).await?;
        rows.into_iter()
            .map(|row| total(&row).ok_or_else(|| err("a report row of unexpected types")))
            .collect()
    }
}

/// One report row: the group, then the sums.
fn total(row: &[Value]) -> Option<Total> {
    let int = |index: usize| row.get(index).and_then(Value::int);
    Some(Total {
        group: row.first()?.text()?.to_owned(),
        requests: int(1)?,
        prompt_tokens: int(2)?,
        completion_tokens: int(3)?,
        cached_tokens: int(4)?,
        cost_usd: row.get(5)?.float()?,
    })
}

fn db_unavailable(error: impl std::fmt::Display) -> DbError {
    DbError::Unavailable(error.to_string())
}

/// One multi-row `INSERT` per batch; rows already written are skipped, and
/// the count is of the new ones.
async fn write_postgres(db: &Db, records: &[UsageRecord]) -> Result<u64, StoreError> {
    let days = days_of(records);
    let texts: Vec<Texts<'_>> = records.iter().map(UsageRecord::texts).collect();
    let days: Vec<&str> = days.iter().map(|d| &**d).collect();
    let mut sql = format!("INSERT INTO sluice_usage ({COLUMNS}, day) VALUES ");
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        Vec::with_capacity(records.len() * VALUES_PER_ROW);
    for (index, ((r, t), day)) in records.iter().zip(&texts).zip(&days).enumerate() {
        let base = index * VALUES_PER_ROW;
        let placeholders: Vec<String> = (1..=VALUES_PER_ROW)
            .map(|i| format!("${}", base + i))
            .collect();
        sql.push_str(if index == 0 { "(" } else { ", (" });
        sql.push_str(&placeholders.join(", "));
        sql.push(')');
        params.extend_from_slice(&row_values!(r, t, day));
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    let client = db.postgres().await?;
    client
        .execute(&sql, &params)
        .await
        .map_err(|error| err(crate::infra::sql::describe(&error)))
}

#[cfg(test)]
pub mod flaky {
    //! A store that fails while told to, for outage tests.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{StoreError, UsageRecord};

    #[derive(Default)]
    pub struct Flaky {
        pub down: AtomicBool,
        pub written: Mutex<Vec<UsageRecord>>,
    }

    impl Flaky {
        pub fn write(&self, records: &[UsageRecord]) -> Result<u64, StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("down".into()));
            }
            self.written
                .lock()
                .map_err(|_| StoreError::Unavailable("poisoned".into()))?
                .extend_from_slice(records);
            Ok(records.len() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_few_statement_sizes_in_order() {
        let rows: Vec<UsageRecord> = (0..203)
            .map(|at_ms| UsageRecord {
                at_ms,
                ..UsageRecord::default()
            })
            .collect();
        let chunks: Vec<&[UsageRecord]> = insert_chunks(&rows).collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [64, 64, 64, 8, 2, 1]);
        let order: Vec<i64> = chunks.concat().iter().map(|r| r.at_ms).collect();
        assert_eq!(order, (0..203).collect::<Vec<_>>());
        assert_eq!(insert_chunks(&[]).count(), 0);
    }

    #[tokio::test]
    async fn an_old_table_is_migrated_and_a_batch_written_twice_adds_its_rows_once() {
        let dir = std::env::temp_dir().join(format!("sluice-store-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let old_schema = SCHEMA
            .replace("record_id TEXT, ", "")
            .replace("upstream_request_id TEXT,", "")
            .replace(" trace_id TEXT,", "")
            .replace(" key_id TEXT,", "")
            .replace(", api TEXT", "");
        let old = rusqlite::Connection::open(dir.join("usage.db")).unwrap();
        old.execute_batch(&old_schema).unwrap();
        old.execute_batch(
            "INSERT INTO sluice_usage VALUES (1, 'old', 'k', NULL, 'm', 'm', 'd', 'standard', '-', NULL, 1, 1, 0, 0.0, 1, 200, 0, '1970-01-01')",
        )
        .unwrap();
        drop(old);

        let store = Store::open("sqlite", &dir.display().to_string(), &Tasks::new()).unwrap();
        let batch: Vec<UsageRecord> = (0..3)
            .map(|n| UsageRecord {
                id: format!("id-{n}"),
                upstream_request_id: Some(format!("up-{n}")),
                ..UsageRecord::default()
            })
            .collect();
        let batch = Arc::new(batch);
        assert_eq!(store.write(batch.clone()).await.unwrap(), 3);
        assert_eq!(
            store.write(batch).await.unwrap(),
            0,
            "a replay adds nothing"
        );
        let totals = store.totals("key", 0, i64::MAX).await.unwrap();
        let rows: i64 = totals.iter().map(|t| t.requests).sum();
        assert_eq!(rows, 4, "the old row and three new ones, once each");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
