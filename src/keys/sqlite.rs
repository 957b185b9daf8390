//! The SQLite keys store: one file, opened in WAL mode so processes sharing
//! it read while one writes. Every call runs on the blocking pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::error::unavailable;
use super::schema::{COLUMNS, Row, SCHEMA, settings_json};
use super::{KeyStoreError, RuntimeKey};

/// How long a call waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct SqliteKeys {
    connection: Arc<Mutex<Connection>>,
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: row.get(0)?,
        name: row.get(1)?,
        key_sha256: row.get(2)?,
        hint: row.get(3)?,
        settings: row.get(4)?,
        revision: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

/// Runs one change and, when it touched a row, bumps the version, in one
/// transaction. A unique-name violation is `DuplicateName`.
fn write(
    connection: &mut Connection,
    name: &str,
    change: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
) -> Result<bool, KeyStoreError> {
    let tx = connection.transaction().map_err(unavailable)?;
    let changed = match change(&tx) {
        Ok(changed) => changed > 0,
        Err(error) if error.to_string().contains("sluice_keys.name") => {
            return Err(KeyStoreError::DuplicateName(name.to_owned()));
        }
        Err(error) => return Err(unavailable(error)),
    };
    if changed {
        tx.execute("UPDATE sluice_keys_version SET version = version + 1", [])
            .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)?;
    Ok(changed)
}

impl SqliteKeys {
    /// Opens (creating the file, its directory and the tables if needed).
    pub async fn open(path: PathBuf) -> Result<Self, KeyStoreError> {
        let open = move || -> Result<Connection, String> {
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|error| format!("{}: {error}", dir.display()))?;
            }
            let describe = |error: rusqlite::Error| format!("{}: {error}", path.display());
            let connection = Connection::open(&path).map_err(describe)?;
            connection.busy_timeout(BUSY_TIMEOUT).map_err(describe)?;
            connection
                .execute_batch(&format!(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; {SCHEMA}"
                ))
                .map_err(describe)?;
            Ok(connection)
        };
        let connection = tokio::task::spawn_blocking(open)
            .await
            .map_err(|error| KeyStoreError::Open(error.to_string()))?
            .map_err(KeyStoreError::Open)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, KeyStoreError> + Send + 'static,
    ) -> Result<T, KeyStoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| unavailable("connection lock poisoned"))?;
            job(&mut connection)
        })
        .await
        .map_err(unavailable)?
    }

    pub async fn version(&self) -> Result<i64, KeyStoreError> {
        self.run(|c| {
            c.query_row("SELECT version FROM sluice_keys_version", [], |row| {
                row.get(0)
            })
            .map_err(unavailable)
        })
        .await
    }

    pub async fn load(&self, limit: usize) -> Result<Vec<Row>, KeyStoreError> {
        self.run(move |c| {
            let mut query = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sluice_keys WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT ?1"
                ))
                .map_err(unavailable)?;
            let rows = query
                .query_map([limit as i64], read_row)
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)
        })
        .await
    }

    pub async fn fetch(&self, id: &str) -> Result<Option<Row>, KeyStoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM sluice_keys WHERE id = ?1 AND revoked_at IS NULL"),
                [&id],
                read_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    pub async fn insert(&self, key: &RuntimeKey) -> Result<(), KeyStoreError> {
        let key = key.clone();
        let settings = settings_json(&key)?;
        self.run(move |c| {
            write(c, &key.name, |tx| {
                tx.execute(
                    &format!("INSERT INTO sluice_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                    params![
                        key.id,
                        key.name,
                        key.key_sha256,
                        key.hint,
                        settings,
                        key.revision,
                        key.created_at,
                        key.updated_at
                    ],
                )
            })
            .map(|_| ())
        })
        .await
    }

    pub async fn replace(&self, key: &RuntimeKey, expected: i64) -> Result<bool, KeyStoreError> {
        let key = key.clone();
        let settings = settings_json(&key)?;
        self.run(move |c| {
            write(c, &key.name, |tx| {
                tx.execute(
                    "UPDATE sluice_keys SET name = ?2, settings = ?3, revision = ?4, updated_at = ?5
                     WHERE id = ?1 AND revision = ?6 AND revoked_at IS NULL",
                    params![
                        key.id,
                        key.name,
                        settings,
                        key.revision,
                        key.updated_at,
                        expected
                    ],
                )
            })
        })
        .await
    }

    pub async fn revoke(&self, id: &str, at: i64) -> Result<bool, KeyStoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            write(c, "", |tx| {
                tx.execute(
                    "UPDATE sluice_keys SET revoked_at = ?2, updated_at = ?2, revision = revision + 1
                     WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, at],
                )
            })
        })
        .await
    }
}
