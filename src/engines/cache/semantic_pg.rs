//! The semantic index in PostgreSQL with pgvector, shared by replicas (each
//! still keeps answers in the exact store, so fleets pair it with
//! `[cache] store = "redis"`). Lookups are one query, bounded by the
//! semantic timeout; inserts go through a bounded channel to a writer task,
//! off the request path. Each embedding size gets its own partial HNSW index
//! (`vector(N)` cast), created when the first vector of that size arrives,
//! so switching embedding models needs no migration.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pgvector::Vector;
use tokio::sync::mpsc;

use super::key::CacheKey;
use crate::infra::metrics::Metrics;
use crate::infra::sql::{SharedPostgres, describe};
use crate::infra::telemetry::LogEvery;
use crate::util::tasks::Tasks;

/// `hnsw.ef_search` is raised from pgvector's 40 because the partition
/// filter is applied after the index scan: more candidates, fewer misses
/// in a table shared by many partitions.
const SCHEMA: &str = "CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE IF NOT EXISTS sluice_semantic_cache (
        partition BIGINT NOT NULL, cache_key TEXT NOT NULL, dims INT NOT NULL,
        embedding vector NOT NULL, expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (partition, cache_key));
    CREATE INDEX IF NOT EXISTS sluice_semantic_cache_expires ON sluice_semantic_cache (expires_at);
    SET hnsw.ef_search = 200;";

/// The partial HNSW index for one embedding size; the lookup's `ORDER BY`
/// uses the same `vector(N)` expression so the planner can pick it.
pub fn hnsw_index(dims: usize) -> String {
    format!(
        "CREATE INDEX IF NOT EXISTS sluice_semantic_cache_hnsw_{dims}
         ON sluice_semantic_cache USING hnsw ((embedding::vector({dims})) vector_cosine_ops)
         WHERE dims = {dims}"
    )
}

/// Inserts waiting for the writer; past this they are dropped (counted).
const QUEUE: usize = 1024;
const BATCH: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Row {
    partition: u64,
    vector: Vector,
    key: CacheKey,
    expires: SystemTime,
}

pub struct PgIndex {
    postgres: Arc<SharedPostgres>,
    writes: mpsc::Sender<Row>,
    errors: ErrorLog,
}

impl PgIndex {
    /// Connects lazily: a database that is down makes lookups misses.
    pub fn start(url: &str, metrics: Metrics, tasks: &Tasks) -> Self {
        let postgres = Arc::new(SharedPostgres::new(url, SCHEMA, tasks));
        let (writes, rows) = mpsc::channel(QUEUE);
        let errors = ErrorLog {
            metrics,
            log: Arc::new(LogEvery::store_failures()),
        };
        let writer = Writer {
            postgres: postgres.clone(),
            indexed: HashSet::new(),
            errors: errors.clone(),
        };
        // Index rows still queued at shutdown are dropped: the index is a
        // cache of a cache, rebuilt by later misses.
        tasks.spawn_until_stopped(writer.run(rows));
        Self {
            postgres,
            writes,
            errors,
        }
    }

    /// The nearest live entry of the partition at or above `threshold`.
    pub async fn nearest(
        &self,
        partition: u64,
        vector: &[f32],
        threshold: f32,
    ) -> Option<CacheKey> {
        let dims = vector.len();
        let query = async {
            let client = self.postgres.client().await?;
            let sql = format!(
                "SELECT cache_key, 1 - (embedding::vector({dims}) <=> $1::vector({dims}))
                 FROM sluice_semantic_cache
                 WHERE dims = {dims} AND partition = $2 AND expires_at > now()
                 ORDER BY embedding::vector({dims}) <=> $1::vector({dims}) LIMIT 1"
            );
            let probe = Vector::from(vector.to_vec());
            client.query_opt(&sql, &[&probe, &(partition as i64)]).await
        };
        let found = query.await.and_then(|row| {
            row.map(|row| Ok((row.try_get::<_, String>(0)?, row.try_get::<_, f64>(1)?)))
                .transpose()
        });
        match found {
            Ok(Some((key, similarity))) if similarity >= f64::from(threshold) => {
                u128::from_str_radix(&key, 16).ok().map(CacheKey)
            }
            Ok(_) => None,
            Err(error) => {
                self.errors.record("lookup", &describe(&error));
                None
            }
        }
    }

    /// Queues an insert; never waits. A full queue drops it (counted).
    pub fn insert(&self, partition: u64, vector: Vec<f32>, key: CacheKey, expires: Instant) {
        let expires = SystemTime::now() + expires.saturating_duration_since(Instant::now());
        let row = Row {
            partition,
            vector: Vector::from(vector),
            key,
            expires,
        };
        if self.writes.try_send(row).is_err() {
            self.errors.record("insert", &"the insert queue is full");
        }
    }
}

/// Counts every failure; logs at most one per 10 s.
#[derive(Clone)]
struct ErrorLog {
    metrics: Metrics,
    log: Arc<LogEvery>,
}

impl ErrorLog {
    fn record(&self, what: &str, error: &dyn std::fmt::Display) {
        self.metrics.cache_store_errors.inc();
        if self.log.due() {
            tracing::warn!(%error, "semantic cache index: {what} failed (semantic lookups are misses while the index is unreachable)");
        }
    }
}

struct Writer {
    postgres: Arc<SharedPostgres>,
    /// Embedding sizes whose HNSW index exists.
    indexed: HashSet<usize>,
    errors: ErrorLog,
}

impl Writer {
    async fn run(mut self, mut rows: mpsc::Receiver<Row>) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = rows.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    if let Err(error) = self.write(&batch).await {
                        self.errors.record("insert", &describe(&error));
                    }
                    batch.clear();
                }
                _ = sweep.tick() => {
                    if let Err(error) = self.sweep().await {
                        self.errors.record("expiry sweep", &describe(&error));
                    }
                }
            }
        }
    }

    async fn write(&mut self, rows: &[Row]) -> Result<(), tokio_postgres::Error> {
        let client = self.postgres.client().await?;
        for row in rows {
            let dims = row.vector.as_slice().len();
            if !self.indexed.contains(&dims) {
                client.batch_execute(&hnsw_index(dims)).await?;
                self.indexed.insert(dims);
            }
        }
        let insert = client
            .prepare(
                "INSERT INTO sluice_semantic_cache (partition, cache_key, dims, embedding, expires_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (partition, cache_key) DO UPDATE
                 SET dims = EXCLUDED.dims, embedding = EXCLUDED.embedding, expires_at = EXCLUDED.expires_at",
            )
            .await?;
        for row in rows {
            let dims = row.vector.as_slice().len() as i32;
            client
                .execute(
                    &insert,
                    &[
                        &(row.partition as i64),
                        &row.key.hex(),
                        &dims,
                        &row.vector,
                        &row.expires,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    async fn sweep(&self) -> Result<(), tokio_postgres::Error> {
        let client = self.postgres.client().await?;
        client
            .execute(
                "DELETE FROM sluice_semantic_cache WHERE expires_at <= now()",
                &[],
            )
            .await?;
        Ok(())
    }
}
