//! Where entries live: in memory (moka, bounded by bytes, per-entry expiry)
//! or in Redis (shared by replicas, same TTL), each kept `stale_for` past
//! its TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

use super::entry::Entry;
use super::key::CacheKey;
use crate::infra::redis::{RedisError, SharedRedis};

/// Clones share the entries.
#[derive(Clone)]
pub enum Store {
    Memory(Cache<CacheKey, Arc<Entry>>),
    Redis { redis: SharedRedis, prefix: String },
}

/// Each entry lives for its own TTL (the default, or the request's
/// override) plus `stale_for`; `Entry::fresh` tells the two apart.
struct EntryTtl;

impl Expiry<CacheKey, Arc<Entry>> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(entry.kept())
    }
}

impl Store {
    pub fn memory(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Arc<Entry>| entry.weight())
            .expire_after(EntryTtl)
            .build();
        Self::Memory(cache)
    }

    pub fn redis(redis: SharedRedis, prefix: &str) -> Self {
        Self::Redis {
            redis,
            prefix: format!("{{{prefix}}}:cache:"),
        }
    }

    pub async fn get(&self, key: CacheKey) -> Result<Option<Arc<Entry>>, RedisError> {
        match self {
            Self::Memory(cache) => Ok(cache.get(&key)),
            Self::Redis { redis, prefix } => {
                let name = format!("{prefix}{}", key.hex());
                let raw: Option<Vec<u8>> = redis
                    .run(|mut manager| async move {
                        redis::AsyncCommands::get(&mut manager, name).await
                    })
                    .await?;
                Ok(raw
                    .and_then(|raw| serde_json::from_slice(&raw).ok())
                    .map(Arc::new))
            }
        }
    }

    pub async fn put(&self, key: CacheKey, entry: Arc<Entry>) -> Result<(), RedisError> {
        match self {
            Self::Memory(cache) => {
                cache.insert(key, entry);
                Ok(())
            }
            Self::Redis { redis, prefix } => {
                let name = format!("{prefix}{}", key.hex());
                let Ok(raw) = serde_json::to_vec(entry.as_ref()) else {
                    return Ok(());
                };
                let ttl = entry.ttl_ms.saturating_add(entry.stale_ms).max(1);
                redis
                    .run(|mut manager| async move {
                        redis::AsyncCommands::pset_ex::<_, _, ()>(&mut manager, name, raw, ttl)
                            .await
                    })
                    .await
            }
        }
    }

    /// Entries and bytes held (memory store only).
    pub fn size(&self) -> Option<(u64, u64)> {
        match self {
            Self::Memory(cache) => {
                cache.run_pending_tasks();
                Some((cache.entry_count(), cache.weighted_size()))
            }
            Self::Redis { .. } => None,
        }
    }
}
