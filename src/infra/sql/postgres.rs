//! A lazily (re)connected PostgreSQL client shared by the stores that use
//! one (usage ledger, semantic-cache index). It connects on first use and
//! runs the store's schema statements then, so a database that is down at
//! start-up only delays that store; a broken connection is replaced on the
//! next call. Calls on a live connection take no lock: they clone the client
//! out of a read guard, and tokio-postgres pipelines them on one connection.

use std::sync::{Arc, RwLock};

use tokio_postgres::{Client, NoTls};

use crate::util::tasks::Tasks;

/// The advisory lock held while a store's tables are created.
const SCHEMA_LOCK: i64 = 0x0005_10ce;

pub struct SharedPostgres {
    url: String,
    /// Run once per new connection, e.g. `CREATE TABLE IF NOT EXISTS`.
    schema: String,
    client: RwLock<Option<Arc<Client>>>,
    /// Only one caller connects at a time; the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Owns the connection drivers; a driver ends with its connection or
    /// at shutdown.
    tasks: Tasks,
}

impl SharedPostgres {
    pub fn new(url: &str, schema: impl Into<String>, tasks: &Tasks) -> Self {
        Self {
            url: url.to_owned(),
            schema: schema.into(),
            client: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            tasks: tasks.clone(),
        }
    }

    fn live(&self) -> Option<Arc<Client>> {
        let client = self.client.read().ok()?.clone()?;
        (!client.is_closed()).then_some(client)
    }

    /// A connected client, connecting (and running the schema) first if needed.
    pub async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        if let Some(client) = self.live() {
            return Ok(client);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(client) = self.live() {
            return Ok(client);
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        self.tasks.spawn_until_stopped(async move {
            if let Err(error) = connection.await {
                tracing::warn!(error = %describe(&error), "PostgreSQL connection closed");
            }
        });
        // One replica at a time: two running `CREATE TABLE IF NOT EXISTS`
        // at once can both pass the check and one fails on the catalog's
        // unique index (replicas of a fleet start together).
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {}; COMMIT;",
                self.schema
            ))
            .await?;
        let client = Arc::new(client);
        if let Ok(mut slot) = self.client.write() {
            *slot = Some(client.clone());
        }
        Ok(client)
    }
}

/// A statement that adds `column` (its name, then its type) to `table`
/// only when it is missing. `ADD COLUMN IF NOT EXISTS` would take the
/// table's exclusive lock even when the column is there, and the schema
/// runs on every new connection, while other replicas write the table.
pub fn add_column(table: &str, column: &str) -> String {
    let name = column.split_whitespace().next().unwrap_or(column);
    format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = '{table}' \
         AND column_name = '{name}') THEN ALTER TABLE {table} ADD COLUMN {column}; \
         END IF; END $$;\n"
    )
}

/// The error with its causes: tokio-postgres's own text for a server error
/// is only "db error", the server's message is its source.
pub fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
