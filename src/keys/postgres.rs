//! The PostgreSQL keys store, shared by a fleet. Each write is one
//! statement that changes the row, bumps the version and sends a NOTIFY on
//! `CHANNEL` carrying the new version; the notification goes out when the
//! statement commits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::schema::{COLUMNS, NAME_INDEX, Row, SCHEMA, settings_json};
use super::{KeyStoreError, RuntimeKey};
use crate::postgres::{SharedPostgres, describe};
use crate::tasks::Tasks;

/// The NOTIFY channel replicas LISTEN on.
pub(super) const CHANNEL: &str = "sluice_keys";

/// Bound on one call, connecting included: a database that hangs answers
/// like one that refuses.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Any constant; it serialises replicas creating the tables at once, which
/// `IF NOT EXISTS` alone does not (it can fail on the catalog's unique index).
const SCHEMA_LOCK: i64 = 7_261_537_409;

pub(super) struct PostgresKeys {
    url: String,
    postgres: SharedPostgres,
}

fn pg_error(error: &tokio_postgres::Error) -> KeyStoreError {
    KeyStoreError::Unavailable(describe(error))
}

fn read_row(row: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    Ok(Row {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        key_sha256: row.try_get(2)?,
        hint: row.try_get(3)?,
        settings: row.try_get(4)?,
        revision: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
    })
}

/// `change` (one data-modifying statement `RETURNING id`) with the version
/// bump and the notification, only when it touched a row.
fn with_bump(change: &str) -> String {
    format!(
        "WITH k AS ({change} RETURNING id),
              v AS (UPDATE sluice_keys_version SET version = version + 1
                    WHERE EXISTS (SELECT 1 FROM k) RETURNING version)
         SELECT version, pg_notify('{CHANNEL}', version::text) FROM v"
    )
}

impl PostgresKeys {
    /// Connects lazily: a database that is down only delays the keys.
    pub fn new(url: &str, tasks: &Tasks) -> Self {
        let schema = format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}");
        Self {
            url: url.to_owned(),
            postgres: SharedPostgres::new(url, schema, tasks),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `call` with a connected client, within `CALL_TIMEOUT`; the outer
    /// error is the timeout, the inner one the database's.
    async fn timed<T, F>(
        &self,
        call: impl FnOnce(Arc<tokio_postgres::Client>) -> F,
    ) -> Result<Result<T, tokio_postgres::Error>, KeyStoreError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let run = async {
            let client = self.postgres.client().await?;
            call(client).await
        };
        tokio::time::timeout(CALL_TIMEOUT, run)
            .await
            .map_err(|_| KeyStoreError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}")))
    }

    async fn call<T, F>(
        &self,
        call: impl FnOnce(Arc<tokio_postgres::Client>) -> F,
    ) -> Result<T, KeyStoreError>
    where
        F: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        self.timed(call).await?.map_err(|error| pg_error(&error))
    }

    /// Runs a bumping write; `true` when it touched a row.
    async fn write(
        &self,
        name: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, KeyStoreError> {
        let result = self
            .timed(|client| async move { client.query(sql, params).await })
            .await?;
        match result {
            Ok(rows) => Ok(!rows.is_empty()),
            Err(error)
                if error.as_db_error().and_then(|db| db.constraint()) == Some(NAME_INDEX) =>
            {
                Err(KeyStoreError::DuplicateName(name.to_owned()))
            }
            Err(error) => Err(pg_error(&error)),
        }
    }

    pub async fn version(&self) -> Result<i64, KeyStoreError> {
        self.call(|client| async move {
            client
                .query_one("SELECT version FROM sluice_keys_version", &[])
                .await?
                .try_get(0)
        })
        .await
    }

    pub async fn load(&self, limit: usize) -> Result<Vec<Row>, KeyStoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sluice_keys WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT $1"
        );
        let limit = limit as i64;
        self.call(|client| async move {
            let rows = client.query(&sql, &[&limit]).await?;
            rows.iter().map(read_row).collect()
        })
        .await
    }

    pub async fn fetch(&self, id: &str) -> Result<Option<Row>, KeyStoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sluice_keys WHERE id = $1 AND revoked_at IS NULL");
        let id = id.to_owned();
        self.call(|client| async move {
            let row = client.query_opt(&sql, &[&id]).await?;
            row.as_ref().map(read_row).transpose()
        })
        .await
    }

    pub async fn insert(&self, key: &RuntimeKey) -> Result<(), KeyStoreError> {
        let settings = settings_json(key)?;
        let sql = with_bump(&format!(
            "INSERT INTO sluice_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ));
        self.write(
            &key.name,
            &sql,
            &[
                &key.id,
                &key.name,
                &key.key_sha256,
                &key.hint,
                &settings,
                &key.revision,
                &key.created_at,
                &key.updated_at,
            ],
        )
        .await
        .map(|_| ())
    }

    pub async fn replace(&self, key: &RuntimeKey, expected: i64) -> Result<bool, KeyStoreError> {
        let settings = settings_json(key)?;
        let sql = with_bump(
            "UPDATE sluice_keys SET name = $2, settings = $3, revision = $4, updated_at = $5
             WHERE id = $1 AND revision = $6 AND revoked_at IS NULL",
        );
        self.write(
            &key.name,
            &sql,
            &[
                &key.id,
                &key.name,
                &settings,
                &key.revision,
                &key.updated_at,
                &expected,
            ],
        )
        .await
    }

    pub async fn revoke(&self, id: &str, at: i64) -> Result<bool, KeyStoreError> {
        let sql = with_bump(
            "UPDATE sluice_keys SET revoked_at = $2, updated_at = $2, revision = revision + 1
             WHERE id = $1 AND revoked_at IS NULL",
        );
        self.write("", &sql, &[&id, &at]).await
    }
}
