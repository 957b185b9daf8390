//! The keys store on the shared SQL layer: SQLite (one file, opened in WAL
//! mode so processes sharing it read while one writes) or PostgreSQL (a
//! fleet). Every write changes the key and bumps the version together:
//! on SQLite in one transaction, on PostgreSQL in one statement that also
//! sends a NOTIFY on `CHANNEL` carrying the new version (it goes out when
//! the statement commits).

use super::schema::{COLUMNS, NAME_INDEX, Row, SCHEMA, settings_json};
use super::{KeyStoreError, RuntimeKey};
use crate::config::KeysStoreSpec;
use crate::infra::sql::{Db, DbError, Dialect, Schema, Value};
use crate::util::tasks::Tasks;

/// The NOTIFY channel replicas LISTEN on.
pub(super) const CHANNEL: &str = "sluice_keys";

pub(super) struct KeysDb {
    db: Db,
    /// The PostgreSQL URL, for the LISTEN connection.
    url: Option<String>,
}

fn store_error(error: DbError) -> KeyStoreError {
    KeyStoreError::Unavailable(error.to_string())
}

/// A row of `COLUMNS`, as read.
fn read_row(row: Vec<Value>) -> Option<Row> {
    let mut values = row.into_iter();
    let mut text = || values.next().and_then(Value::into_text);
    let (id, name, key_sha256, hint, settings) = (text()?, text()?, text()?, text()?, text()?);
    let mut int = || values.next().and_then(|value| value.int());
    Some(Row {
        id,
        name,
        key_sha256,
        hint,
        settings,
        revision: int()?,
        created_at: int()?,
        updated_at: int()?,
    })
}

/// PostgreSQL: `change` (one data-modifying statement) with the version
/// bump and the notification, only when it touched a row.
fn with_bump(change: &str) -> String {
    format!(
        "WITH k AS ({change} RETURNING id),
              v AS (UPDATE sluice_keys_version SET version = version + 1
                    WHERE EXISTS (SELECT 1 FROM k) RETURNING version)
         SELECT version, pg_notify('{CHANNEL}', version::text) FROM v"
    )
}

impl KeysDb {
    /// Opens the store. SQLite opens (and creates its tables) now;
    /// PostgreSQL connects on first use, so a database that is down only
    /// delays the keys.
    pub fn open(spec: &KeysStoreSpec, tasks: &Tasks) -> Result<Self, KeyStoreError> {
        let schema = Schema {
            statements: SCHEMA,
            added: &[],
            then: "",
        };
        let db = Db::open(spec, schema, tasks).map_err(|e| KeyStoreError::Open(e.to_string()))?;
        let url = match spec {
            KeysStoreSpec::Postgres(url) => Some(url.clone()),
            KeysStoreSpec::Sqlite(_) => None,
        };
        Ok(Self { db, url })
    }

    /// The URL to LISTEN on, for a store that sends change notifications.
    pub fn notifications(&self) -> Option<&str> {
        self.url.as_deref()
    }

    pub fn is_shared(&self) -> bool {
        self.db.dialect() == Dialect::Postgres
    }

    /// The change counter.
    pub async fn version(&self) -> Result<i64, KeyStoreError> {
        let row = self
            .db
            .query_one("SELECT version FROM sluice_keys_version", vec![])
            .await
            .map_err(store_error)?;
        row.and_then(|row| row.first().and_then(Value::int))
            .ok_or_else(|| KeyStoreError::Unavailable("no version row".into()))
    }

    /// Live keys, at most `limit`.
    pub async fn load(&self, limit: usize) -> Result<Vec<RuntimeKey>, KeyStoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sluice_keys WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT $1"
        );
        let rows = self
            .db
            .query(&sql, vec![(limit as i64).into()])
            .await
            .map_err(store_error)?;
        Ok(rows
            .into_iter()
            .filter_map(read_row)
            .filter_map(Row::into_key)
            .collect())
    }

    /// One live key, read from the store (not the loaded set).
    pub async fn fetch(&self, id: &str) -> Result<Option<RuntimeKey>, KeyStoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sluice_keys WHERE id = $1 AND revoked_at IS NULL");
        let row = self
            .db
            .query_one(&sql, vec![id.into()])
            .await
            .map_err(store_error)?;
        Ok(row.and_then(read_row).and_then(Row::into_key))
    }

    /// Fails with `DuplicateName` when a live key has the name.
    pub async fn insert(&self, key: &RuntimeKey) -> Result<(), KeyStoreError> {
        let sql =
            format!("INSERT INTO sluice_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        let params = vec![
            key.id.as_str().into(),
            key.name.as_str().into(),
            key.key_sha256.as_str().into(),
            key.hint.as_str().into(),
            settings_json(key)?.into(),
            key.revision.into(),
            key.created_at.into(),
            key.updated_at.into(),
        ];
        self.write(&key.name, &sql, params).await.map(|_| ())
    }

    /// Writes `key` over the live row whose revision is still `expected`;
    /// `false` when there is none (revoked, or changed meanwhile).
    pub async fn replace(&self, key: &RuntimeKey, expected: i64) -> Result<bool, KeyStoreError> {
        let sql = "UPDATE sluice_keys SET name = $2, settings = $3, revision = $4, updated_at = $5
             WHERE id = $1 AND revision = $6 AND revoked_at IS NULL";
        let params = vec![
            key.id.as_str().into(),
            key.name.as_str().into(),
            settings_json(key)?.into(),
            key.revision.into(),
            key.updated_at.into(),
            expected.into(),
        ];
        self.write(&key.name, sql, params).await
    }

    /// `false` when no live key has the id.
    pub async fn revoke(&self, id: &str, at: i64) -> Result<bool, KeyStoreError> {
        let sql = "UPDATE sluice_keys SET revoked_at = $2, updated_at = $2, revision = revision + 1
             WHERE id = $1 AND revoked_at IS NULL";
        self.write("", sql, vec![id.into(), at.into()]).await
    }

    /// Runs a change with the version bump; `true` when it touched a row.
    /// A live name taken already is `DuplicateName`.
    async fn write(
        &self,
        name: &str,
        change: &str,
        params: Vec<Value>,
    ) -> Result<bool, KeyStoreError> {
        let written = match self.db.dialect() {
            Dialect::Postgres => self
                .db
                .query(&with_bump(change), params)
                .await
                .map(|rows| !rows.is_empty()),
            Dialect::Sqlite => self.sqlite_write(change, params).await,
        };
        match written {
            Err(DbError::Constraint(what))
                if what == NAME_INDEX || what.contains("sluice_keys.name") =>
            {
                Err(KeyStoreError::DuplicateName(name.to_owned()))
            }
            written => written.map_err(store_error),
        }
    }

    /// SQLite: the change, then the bump when it touched a row, in one
    /// transaction (a bump of nothing is taken back by the `WHERE`).
    async fn sqlite_write(&self, change: &str, params: Vec<Value>) -> Result<bool, DbError> {
        let changed = self
            .db
            .atomic(vec![
                (change.to_owned(), params),
                (
                    "UPDATE sluice_keys_version SET version = version + 1 WHERE changes() > 0"
                        .to_owned(),
                    vec![],
                ),
            ])
            .await?;
        Ok(changed.first().is_some_and(|count| *count > 0))
    }
}
