//! One SQL interface over the two stores jobs live in: SQLite (one file,
//! the default) and PostgreSQL (a fleet). Statements are written once, with
//! `$1`-style placeholders, in the SQL both dialects share; every write is
//! one statement (a compare-and-set where replicas race), so no transaction
//! ever spans a shared PostgreSQL connection's pipeline.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use tokio_postgres::types::{ToSql, Type};

use crate::config::KeysStoreSpec;
use crate::postgres::{SharedPostgres, describe};
use crate::tasks::Tasks;

/// Longest any one statement may take: a store that hangs fails the call
/// (an API error, or a runner that retries later) instead of holding it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("job store: {0}")]
    Unavailable(String),
}

fn unavailable(error: impl std::fmt::Display) -> DbError {
    DbError::Unavailable(error.to_string())
}

/// A column value: every column is a 64-bit integer or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(value) => Some(*value),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(value) => Some(value),
            _ => None,
        }
    }

    pub fn into_text(self) -> Option<String> {
        match self {
            Self::Text(value) => Some(value),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

pub type Row = Vec<Value>;

#[derive(Clone)]
pub enum Db {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<SharedPostgres>),
}

impl Db {
    /// Opens the store and creates its tables (`schema`, in both dialects)
    /// and the columns `added` to tables made by an older schema, at
    /// start-up. SQLite opens now; PostgreSQL connects on first use, so a
    /// database that is down at start-up only delays the API and the runners.
    pub fn open(
        spec: &KeysStoreSpec,
        schema: &str,
        added: &[(&str, &str)],
        tasks: &Tasks,
    ) -> Result<Self, DbError> {
        match spec {
            KeysStoreSpec::Sqlite(path) => {
                let connection = open_sqlite(path, schema)?;
                add_sqlite_columns(&connection, added)?;
                Ok(Self::Sqlite(Arc::new(Mutex::new(connection))))
            }
            KeysStoreSpec::Postgres(url) => {
                let mut schema = schema.to_owned();
                for (table, column) in added {
                    schema.push_str(&crate::postgres::add_column(table, column));
                }
                Ok(Self::Postgres(Arc::new(SharedPostgres::new(
                    url, schema, tasks,
                ))))
            }
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let run = async {
            match self {
                Self::Sqlite(connection) => {
                    let sql = sqlite_placeholders(sql);
                    let connection = connection.clone();
                    tokio::task::spawn_blocking(move || {
                        let connection = connection.lock().map_err(unavailable)?;
                        let mut statement = connection.prepare_cached(&sql).map_err(unavailable)?;
                        let changed = statement
                            .execute(rusqlite::params_from_iter(params.iter().map(sqlite_value)))
                            .map_err(unavailable)?;
                        Ok(changed as u64)
                    })
                    .await
                    .map_err(unavailable)?
                }
                Self::Postgres(postgres) => {
                    let client = postgres.client().await.map_err(pg_error)?;
                    let statement = client.prepare(sql).await.map_err(pg_error)?;
                    let bound = pg_params(&params, statement.params());
                    client
                        .execute(&statement, &as_refs(&bound))
                        .await
                        .map_err(pg_error)
                }
            }
        };
        within_deadline(run).await
    }

    /// Runs one query; its rows, each column as a [`Value`].
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let run = async {
            match self {
                Self::Sqlite(connection) => {
                    let sql = sqlite_placeholders(sql);
                    let connection = connection.clone();
                    tokio::task::spawn_blocking(move || {
                        let connection = connection.lock().map_err(unavailable)?;
                        let mut statement = connection.prepare_cached(&sql).map_err(unavailable)?;
                        let columns = statement.column_count();
                        let mut rows = statement
                            .query(rusqlite::params_from_iter(params.iter().map(sqlite_value)))
                            .map_err(unavailable)?;
                        let mut out = Vec::new();
                        while let Some(row) = rows.next().map_err(unavailable)? {
                            let mut values = Vec::with_capacity(columns);
                            for index in 0..columns {
                                values.push(read_sqlite(row.get_ref(index).map_err(unavailable)?));
                            }
                            out.push(values);
                        }
                        Ok(out)
                    })
                    .await
                    .map_err(unavailable)?
                }
                Self::Postgres(postgres) => {
                    let client = postgres.client().await.map_err(pg_error)?;
                    let statement = client.prepare(sql).await.map_err(pg_error)?;
                    let bound = pg_params(&params, statement.params());
                    let rows = client
                        .query(&statement, &as_refs(&bound))
                        .await
                        .map_err(pg_error)?;
                    rows.iter().map(read_pg).collect()
                }
            }
        };
        within_deadline(run).await
    }

    /// The first row of a query, if any.
    pub async fn query_one(&self, sql: &str, params: Vec<Value>) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

async fn within_deadline<T>(run: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            Err(DbError::Unavailable(
                "the store did not answer in time".into(),
            ))
        })
}

fn open_sqlite(path: &Path, schema: &str) -> Result<Connection, DbError> {
    let describe = |error: &dyn std::fmt::Display| {
        DbError::Unavailable(format!("{}: {error}", path.display()))
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| describe(&error))?;
    }
    let connection = Connection::open(PathBuf::from(path)).map_err(|error| describe(&error))?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(|error| describe(&error))?;
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; {schema}"
        ))
        .map_err(|error| describe(&error))?;
    Ok(connection)
}

/// SQLite has no `ADD COLUMN IF NOT EXISTS`: a column already there is
/// the one error expected.
fn add_sqlite_columns(connection: &Connection, added: &[(&str, &str)]) -> Result<(), DbError> {
    for (table, column) in added {
        match connection.execute(&format!("ALTER TABLE {table} ADD COLUMN {column}"), []) {
            Err(error) if !error.to_string().contains("duplicate column") => {
                return Err(unavailable(error));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `$1` → `?1`: SQLite numbers `?NNN` parameters as PostgreSQL numbers `$N`.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn sqlite_value(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(value) => rusqlite::types::Value::Integer(*value),
        Value::Text(value) => rusqlite::types::Value::Text(value.clone()),
    }
}

fn read_sqlite(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Integer(value) => Value::Int(value),
        ValueRef::Text(text) | ValueRef::Blob(text) => {
            Value::Text(String::from_utf8_lossy(text).into_owned())
        }
        ValueRef::Real(value) => Value::Int(value as i64),
        ValueRef::Null => Value::Null,
    }
}

/// Each value typed as its parameter's column wants it: a null needs the
/// type PostgreSQL inferred for it.
fn pg_params(values: &[Value], types: &[Type]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    values
        .iter()
        .zip(types)
        .map(|(value, kind)| -> Box<dyn ToSql + Sync + Send> {
            let integer = [Type::INT8, Type::INT4, Type::INT2].contains(kind);
            match value {
                Value::Int(value) if *kind == Type::INT4 => Box::new(*value as i32),
                Value::Int(value) => Box::new(*value),
                Value::Text(value) => Box::new(value.clone()),
                Value::Null if integer => Box::new(None::<i64>),
                Value::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

fn as_refs(bound: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    bound
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn read_pg(row: &tokio_postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index).map(Value::from),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(index)
                .map(|value| Value::from(value.map(i64::from))),
            _ => row.try_get::<_, Option<String>>(index).map(Value::from),
        };
        values.push(value.map_err(pg_error)?);
    }
    Ok(values)
}

fn pg_error(error: tokio_postgres::Error) -> DbError {
    DbError::Unavailable(describe(&error))
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
    fn numbers_placeholders_for_sqlite() {
        assert_eq!(
            sqlite_placeholders("SELECT a FROM t WHERE b = $2 AND c = $1 OR d = '$'"),
            "SELECT a FROM t WHERE b = ?2 AND c = ?1 OR d = '$'"
        );
    }

    #[test]
    fn a_store_made_before_a_column_gets_it_once() {
        let dir = std::env::temp_dir().join(format!("sluice-db-{}", fastrand::u64(..)));
        let spec = KeysStoreSpec::Sqlite(dir.join("jobs.sqlite"));
        let schema = "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY);";
        Db::open(&spec, schema, &[], &Tasks::new()).unwrap();
        for _ in 0..2 {
            let Db::Sqlite(connection) =
                Db::open(&spec, schema, &[("t", "added BIGINT")], &Tasks::new()).unwrap()
            else {
                panic!("a SQLite spec opens SQLite");
            };
            let connection = connection.lock().unwrap();
            connection
                .execute("INSERT OR REPLACE INTO t (id, added) VALUES ('a', 1)", [])
                .unwrap();
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn sqlite_runs_the_shared_sql() {
        let dir = std::env::temp_dir().join(format!("sluice-db-{}", fastrand::u64(..)));
        let spec = KeysStoreSpec::Sqlite(dir.join("jobs.sqlite"));
        let db = Db::open(
            &spec,
            "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, n BIGINT, note TEXT);",
            &[("t", "extra TEXT")],
            &Tasks::new(),
        )
        .unwrap();
        let insert = "INSERT INTO t (id, n, note) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        assert_eq!(
            db.execute(insert, vec!["a".into(), 1.into(), Value::Null])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            db.execute(insert, vec!["a".into(), 2.into(), "x".into()])
                .await
                .unwrap(),
            0
        );
        let row = db
            .query_one("SELECT n, note FROM t WHERE id = $1", vec!["a".into()])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row, vec![Value::Int(1), Value::Null]);
        std::fs::remove_dir_all(dir).ok();
    }
}
