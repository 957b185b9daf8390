//! One SQL layer for the stores that keep rows (the job store, the runtime
//! keys, the usage ledger) over the two databases they live in: SQLite (one
//! file, the default) and PostgreSQL (a fleet). Statements are written
//! once, with `$1`-style placeholders, in the SQL both dialects share
//! (`sqlite` maps them); a store's schema and the columns added since its
//! first release are applied by one migration helper at open. Writes
//! replicas race on are single statements (a compare-and-set), so no
//! transaction spans a shared PostgreSQL connection's pipeline; on SQLite,
//! `atomic` runs several in one transaction.

mod postgres;
mod sqlite;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio_postgres::types::{ToSql, Type};

pub use postgres::{SharedPostgres, add_column, describe};

use crate::config::KeysStoreSpec;
use crate::util::tasks::Tasks;

/// Longest any one statement may take: a store that hangs fails the call
/// (an API error, or a runner that retries later) instead of holding it.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The store could not be opened or its schema applied.
    #[error("{0}")]
    Open(String),
    /// The store failed or is unreachable: worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// A statement broke a constraint (PostgreSQL: its name; SQLite: its
    /// message, which names the columns).
    #[error("constraint violated: {0}")]
    Constraint(String),
}

fn unavailable(error: impl std::fmt::Display) -> DbError {
    DbError::Unavailable(error.to_string())
}

/// A column value: every column is a 64-bit integer, a double, or text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// A double, or an integer read as one.
    pub fn float(&self) -> Option<f64> {
        match self {
            Self::Float(value) => Some(*value),
            Self::Int(value) => Some(*value as f64),
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

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Self::Float(value)
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

/// A store's tables: its schema statements (both dialects read them), the
/// columns added to its tables since its first release (`(table, column
/// and type)`), and statements that need those columns (an index on one).
pub struct Schema<'a> {
    pub statements: &'a str,
    pub added: &'a [(&'a str, &'a str)],
    pub then: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Db {
    inner: Inner,
    /// SQLite's calls run on the blocking pool, as tasks shutdown waits for.
    tasks: Tasks,
}

#[derive(Clone)]
enum Inner {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<SharedPostgres>),
}

impl Db {
    /// Opens the store and applies its schema. SQLite opens now;
    /// PostgreSQL connects (and migrates) on first use, so a database that
    /// is down at start-up only delays the store.
    pub fn open(spec: &KeysStoreSpec, schema: Schema<'_>, tasks: &Tasks) -> Result<Self, DbError> {
        let inner = match spec {
            KeysStoreSpec::Sqlite(path) => {
                let connection = sqlite::open(path, schema.statements)?;
                sqlite::add_columns(&connection, schema.added)?;
                connection
                    .execute_batch(schema.then)
                    .map_err(|error| DbError::Open(error.to_string()))?;
                Inner::Sqlite(Arc::new(Mutex::new(connection)))
            }
            KeysStoreSpec::Postgres(url) => {
                let mut statements = schema.statements.to_owned();
                for (table, column) in schema.added {
                    statements.push_str(&add_column(table, column));
                }
                statements.push_str(schema.then);
                Inner::Postgres(Arc::new(SharedPostgres::new(url, statements, tasks)))
            }
        };
        Ok(Self {
            inner,
            tasks: tasks.clone(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            Inner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Connects now (PostgreSQL; SQLite is open already).
    pub async fn prepare(&self) -> Result<(), DbError> {
        match &self.inner {
            Inner::Sqlite(_) => Ok(()),
            Inner::Postgres(postgres) => postgres.client().await.map(|_| ()).map_err(pg_error),
        }
    }

    /// Runs `job` with SQLite's connection on the blocking pool: for a bulk
    /// write that binds its own parameters.
    pub async fn with_sqlite<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let Inner::Sqlite(connection) = &self.inner else {
            return Err(DbError::Unavailable("not a SQLite store".into()));
        };
        let connection = connection.clone();
        within_deadline(async move {
            self.tasks
                .spawn_blocking(move || {
                    let mut connection = connection
                        .lock()
                        .map_err(|_| unavailable("connection lock poisoned"))?;
                    job(&mut connection)
                })
                .await
                .map_err(unavailable)?
        })
        .await
    }

    /// PostgreSQL's client, connected: for a bulk write that binds its own
    /// parameters.
    pub async fn postgres(&self) -> Result<Arc<tokio_postgres::Client>, DbError> {
        match &self.inner {
            Inner::Postgres(postgres) => postgres.client().await.map_err(pg_error),
            Inner::Sqlite(_) => Err(DbError::Unavailable("not a PostgreSQL store".into())),
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        match &self.inner {
            Inner::Sqlite(_) => {
                let sql = sql.to_owned();
                let changed = self
                    .with_sqlite(move |c| sqlite::atomic(c, &[(sql, params)]))
                    .await?;
                Ok(changed.first().copied().unwrap_or(0))
            }
            Inner::Postgres(postgres) => {
                within_deadline(async {
                    let client = postgres.client().await.map_err(pg_error)?;
                    let statement = client.prepare(sql).await.map_err(pg_error)?;
                    let bound = pg_params(&params, statement.params());
                    client
                        .execute(&statement, &as_refs(&bound))
                        .await
                        .map_err(pg_error)
                })
                .await
            }
        }
    }

    /// SQLite only: `statements` in one transaction; the rows each changed.
    /// (PostgreSQL stores write one statement, a CTE where it takes more.)
    pub async fn atomic(&self, statements: Vec<(String, Vec<Value>)>) -> Result<Vec<u64>, DbError> {
        self.with_sqlite(move |c| sqlite::atomic(c, &statements))
            .await
    }

    /// Runs one query; its rows, each column as a [`Value`].
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        match &self.inner {
            Inner::Sqlite(_) => {
                let sql = sql.to_owned();
                self.with_sqlite(move |c| sqlite::query(c, &sql, &params))
                    .await
            }
            Inner::Postgres(postgres) => {
                within_deadline(async {
                    let client = postgres.client().await.map_err(pg_error)?;
                    let statement = client.prepare(sql).await.map_err(pg_error)?;
                    let bound = pg_params(&params, statement.params());
                    let rows = client
                        .query(&statement, &as_refs(&bound))
                        .await
                        .map_err(pg_error)?;
                    rows.iter().map(read_pg).collect()
                })
                .await
            }
        }
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
                Value::Float(value) => Box::new(*value),
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
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(index).map(Value::from),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(index)
                .map(|value| Value::from(value.map(i64::from))),
            // A function called for its effect (`pg_notify`) returns nothing.
            Type::VOID => Ok(Value::Null),
            _ => row.try_get::<_, Option<String>>(index).map(Value::from),
        };
        values.push(value.map_err(pg_error)?);
    }
    Ok(values)
}

fn pg_error(error: tokio_postgres::Error) -> DbError {
    match error.as_db_error().and_then(|db| db.constraint()) {
        Some(constraint) => DbError::Constraint(constraint.to_owned()),
        None => DbError::Unavailable(describe(&error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_for_sqlite() {
        assert_eq!(
            sqlite::placeholders("SELECT a FROM t WHERE b = $2 AND c = $1 OR d = '$'"),
            "SELECT a FROM t WHERE b = ?2 AND c = ?1 OR d = '$'"
        );
    }

    #[test]
    fn a_store_made_before_a_column_gets_it_once() {
        let dir = std::env::temp_dir().join(format!("sluice-db-{}", fastrand::u64(..)));
        let spec = KeysStoreSpec::Sqlite(dir.join("jobs.sqlite"));
        let schema = "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY);";
        let tasks = Tasks::new();
        let plain = Schema {
            statements: schema,
            added: &[],
            then: "",
        };
        Db::open(&spec, plain, &tasks).unwrap();
        for _ in 0..2 {
            let added = Schema {
                statements: schema,
                added: &[("t", "added BIGINT")],
                then: "",
            };
            let db = Db::open(&spec, added, &tasks).unwrap();
            let Inner::Sqlite(connection) = db.inner else {
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
        let schema = Schema {
            statements: "CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY, n BIGINT, note TEXT);",
            added: &[("t", "extra TEXT")],
            then: "",
        };
        let db = Db::open(&spec, schema, &Tasks::new()).unwrap();
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
