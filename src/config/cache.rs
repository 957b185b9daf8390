//! `[cache]` and `[cache.semantic]`.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Entries are served only to the key that stored them (the default).
    #[default]
    Key,
    /// Shared by the keys of one org.
    Org,
    /// Shared by everyone.
    Global,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStore {
    #[default]
    Memory,
    /// Shared by replicas through `[redis] url`.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    pub scope: CacheScope,
    /// Default time to live; a request may set `x-sluice-cache-ttl` (seconds or `30s`).
    #[serde(with = "duration::serde_duration")]
    pub ttl: Duration,
    /// How long past its TTL an entry is kept to answer calls of a degraded
    /// model (ladder levels 2-3); other calls never see it. 0 = off.
    #[serde(with = "duration::serde_duration")]
    pub stale_for: Duration,
    /// Memory store size bound, in bytes of cached responses.
    pub max_bytes: u64,
    /// Larger responses are not cached.
    pub max_entry_bytes: usize,
    /// Cache every request, not only those meant to repeat (temperature 0 or a seed).
    pub cache_all: bool,
    pub store: CacheStore,
    pub semantic: SemanticConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    pub enabled: bool,
    /// Cosine similarity at or above which a cached answer is reused.
    pub threshold: f32,
    /// While the model is degraded (ladder levels 2-3), matches at or above
    /// this (looser) similarity answer too: a near answer beats a 503.
    pub degraded_threshold: Option<f32>,
    /// A model this gateway serves through `/v1/embeddings`.
    pub embedding_model: String,
    /// Bound on the embedding call; past it the request is a plain miss.
    #[serde(with = "duration::serde_duration")]
    pub timeout: Duration,
    /// Index size bound (oldest and expired entries go first); memory only.
    pub max_entries: usize,
    pub store: SemanticStore,
    /// With `store = "postgres"`: a database with the pgvector extension
    /// (created if missing), e.g. `postgres://sluice@db:5432/sluice`.
    pub postgres_url: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticStore {
    /// An HNSW index in this process.
    #[default]
    Memory,
    /// A pgvector table shared by replicas.
    Postgres,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 0.95,
            degraded_threshold: None,
            embedding_model: "text-embedding-3-small".to_owned(),
            timeout: Duration::from_millis(300),
            max_entries: 100_000,
            store: SemanticStore::Memory,
            postgres_url: None,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            scope: CacheScope::Key,
            ttl: Duration::from_secs(3600),
            stale_for: Duration::ZERO,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            cache_all: false,
            store: CacheStore::Memory,
            semantic: SemanticConfig::default(),
        }
    }
}
