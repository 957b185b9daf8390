//! SQLite's side of the dialect mapping: opening a file (WAL, a busy
//! timeout), added columns, `$N` placeholders and value conversions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::{DbError, Value};

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `path` (creating it and its directory) and runs `schema`.
pub(super) fn open(path: &Path, schema: &str) -> Result<Connection, DbError> {
    let describe =
        |error: &dyn std::fmt::Display| DbError::Open(format!("{}: {error}", path.display()));
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|error| describe(&error))?;
    }
    let connection = Connection::open(PathBuf::from(path)).map_err(|error| describe(&error))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
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
pub(super) fn add_columns(connection: &Connection, added: &[(&str, &str)]) -> Result<(), DbError> {
    for (table, column) in added {
        match connection.execute(&format!("ALTER TABLE {table} ADD COLUMN {column}"), []) {
            Err(error) if !error.to_string().contains("duplicate column") => {
                return Err(DbError::Open(error.to_string()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `$1` → `?1`: SQLite numbers `?NNN` parameters as PostgreSQL numbers `$N`.
pub(super) fn placeholders(sql: &str) -> String {
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

pub(super) fn to_sql(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(value) => rusqlite::types::Value::Integer(*value),
        Value::Float(value) => rusqlite::types::Value::Real(*value),
        Value::Text(value) => rusqlite::types::Value::Text(value.clone()),
    }
}

pub(super) fn read(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Integer(value) => Value::Int(value),
        ValueRef::Text(text) | ValueRef::Blob(text) => {
            Value::Text(String::from_utf8_lossy(text).into_owned())
        }
        ValueRef::Real(value) => Value::Float(value),
        ValueRef::Null => Value::Null,
    }
}

/// A refused statement: a constraint it broke, by its message (SQLite names
/// the columns, not the index), or the store failing.
pub(super) fn error(error: rusqlite::Error) -> DbError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => DbError::Constraint(error.to_string()),
        _ => DbError::Unavailable(error.to_string()),
    }
}

/// Runs `statements` in one transaction; the rows each changed.
pub(super) fn atomic(
    connection: &mut Connection,
    statements: &[(String, Vec<Value>)],
) -> Result<Vec<u64>, DbError> {
    let tx = connection.transaction().map_err(error)?;
    let mut changed = Vec::with_capacity(statements.len());
    for (sql, params) in statements {
        let count = tx
            .execute(
                &placeholders(sql),
                rusqlite::params_from_iter(params.iter().map(to_sql)),
            )
            .map_err(error)?;
        changed.push(count as u64);
    }
    tx.commit().map_err(error)?;
    Ok(changed)
}

/// Runs one query; its rows, each column as a [`Value`].
pub(super) fn query(
    connection: &Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<super::Row>, DbError> {
    let mut statement = connection
        .prepare_cached(&placeholders(sql))
        .map_err(error)?;
    let columns = statement.column_count();
    let mut rows = statement
        .query(rusqlite::params_from_iter(params.iter().map(to_sql)))
        .map_err(error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        let mut values = Vec::with_capacity(columns);
        for index in 0..columns {
            values.push(read(row.get_ref(index).map_err(error)?));
        }
        out.push(values);
    }
    Ok(out)
}
