//! The response cache: exact-match, streaming-aware, tenant-scoped, in memory
//! or in Redis, with single-flight coalescing of identical in-flight calls.

pub(crate) mod entry;
pub(crate) mod flight;
pub mod key;
pub(crate) mod semantic;
pub mod semantic_index;
pub mod semantic_pg;
mod state;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use self::flight::Flight;
pub use self::key::CacheKey;
use self::store::Store;
use crate::config::{CacheConfig, CacheScope, CacheStore, Config, SemanticStore, parse_duration};
use crate::engines::internal::InternalCalls;
use crate::engines::metering::Pricing;
use crate::infra::metrics::Metrics;
use crate::infra::redis::SharedRedis;
use crate::util::tasks::Tasks;
use crate::vocab::Identity;

pub use state::CacheState;

/// What a snapshot's cache is built from besides its config.
pub struct CacheParts<'a> {
    pub state: &'a CacheState,
    pub redis: Option<&'a SharedRedis>,
    pub internal: Arc<dyn InternalCalls>,
    pub metrics: Metrics,
    pub pricing: Arc<Pricing>,
    pub tasks: Tasks,
}

pub struct ResponseCache {
    pub(crate) config: CacheConfig,
    pub(crate) store: Store,
    /// Calls in flight, by key, for coalescing (shared by snapshots).
    pub(crate) flights: Arc<DashMap<CacheKey, Arc<Flight>>>,
    /// `[models.X] cache` overrides.
    pub(crate) model_overrides: HashMap<String, bool>,
    pub(crate) semantic: Option<semantic::Semantic>,
    pub(crate) metrics: Metrics,
    /// For the cost a hit saved.
    pricing: Arc<Pricing>,
    /// Store failures are counted each, logged at most every 10 s: during
    /// an outage every request fails the same way.
    store_error_log: crate::infra::telemetry::LogEvery,
    /// Owns the writes of answers to the store.
    pub(crate) tasks: Tasks,
}

impl ResponseCache {
    /// Counts a store failure and logs it, rate-limited.
    pub(crate) fn store_failed(&self, what: &str, error: &crate::infra::redis::RedisError) {
        self.metrics.cache_store_errors.inc();
        if self.store_error_log.due() {
            tracing::warn!(%error, "cache store failure ({what}); later failures are counted in sluice_cache_store_errors_total and logged at most every 10 s");
        }
    }
}

impl ResponseCache {
    /// `None` unless `[cache] enabled = true`. Entries, flights and the
    /// semantic index come from `parts.state`, so they outlive the snapshot.
    pub fn from_config(config: &Config, parts: CacheParts<'_>) -> Result<Option<Self>, String> {
        let cache = &config.cache;
        if !cache.enabled {
            return Ok(None);
        }
        let prefix = config
            .redis
            .as_ref()
            .map_or("sluice", |r| r.key_prefix.as_str());
        let store = match (cache.store, parts.redis) {
            (CacheStore::Memory, _) => parts
                .state
                .store(format!("memory {}", cache.max_bytes), || {
                    Store::memory(cache.max_bytes)
                }),
            (CacheStore::Redis, Some(redis)) => {
                parts.state.store(format!("redis {prefix}"), || {
                    Store::redis(redis.clone(), prefix)
                })
            }
            (CacheStore::Redis, None) => {
                return Err(
                    "cache.store: \"redis\" needs the [redis] the gateway started with (adding [redis] takes a restart)".into(),
                );
            }
        };
        let semantic = cache.semantic.enabled.then(|| {
            if cache.semantic.store == SemanticStore::Postgres && cache.store == CacheStore::Memory
            {
                tracing::warn!(
                    "cache.semantic.store = \"postgres\" with cache.store = \"memory\": other replicas' semantic matches point at answers this one does not hold (they are misses); use cache.store = \"redis\" to share both"
                );
            }
            let index = parts.state.index(semantic::Index::fingerprint(&cache.semantic), || {
                semantic::Index::new(&cache.semantic, parts.metrics.clone(), &parts.tasks)
            });
            semantic::Semantic::new(cache.semantic.clone(), parts.internal.clone(), index)
        });
        Ok(Some(Self {
            pricing: parts.pricing,
            semantic,
            config: cache.clone(),
            store,
            flights: parts.state.flights.clone(),
            model_overrides: config
                .models
                .iter()
                .filter_map(|(name, settings)| Some((name.clone(), settings.cache?)))
                .collect(),
            metrics: parts.metrics,
            store_error_log: crate::infra::telemetry::LogEvery::store_failures(),
            tasks: parts.tasks,
        }))
    }

    /// Whose entries a request may see (its key's, its org's, or everyone's),
    /// and for which resolved model: two variants of one virtual model never
    /// share answers.
    pub(crate) fn scope(&self, identity: &Identity, model: &str) -> String {
        let tenant = self.tenant(identity);
        format!("{tenant}\0{model}")
    }

    fn tenant(&self, identity: &Identity) -> String {
        match self.config.scope {
            CacheScope::Key => format!("key:{}", identity.id),
            CacheScope::Org => match &identity.org {
                Some(org) => format!("org:{org}"),
                // A key without an org shares with nobody.
                None => format!("key:{}", identity.id),
            },
            CacheScope::Global => "global".to_owned(),
        }
    }

    /// The request's `x-sluice-cache-ttl` (seconds or `30s`), else the default.
    pub(crate) fn ttl(&self, headers: &http::HeaderMap) -> Duration {
        headers
            .get("x-sluice-cache-ttl")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_duration)
            .filter(|ttl| !ttl.is_zero())
            .unwrap_or(self.config.ttl)
    }

    /// Counts a hit (`hit`, `semantic_hit` or `stale_hit`) and what it saved: the entry's
    /// tokens and their price.
    pub(crate) fn record_hit(&self, result: &str, model: &str, entry: &entry::Entry) {
        self.metrics
            .cache_requests
            .with_label_values(&[result])
            .inc();
        self.metrics.cache_tokens_saved.inc_by(entry.total_tokens);
        if let Some(usage) = entry.usage {
            let usage = crate::vocab::Usage {
                prompt_tokens: usage.0,
                completion_tokens: usage.1,
                cached_tokens: usage.2,
            };
            self.metrics
                .cache_cost_saved_usd
                .inc_by(self.pricing.cost(model, &usage));
        }
    }

    pub(crate) fn record_size(&self) {
        if let Some((entries, bytes)) = self.store.size() {
            self.metrics.cache_entries.set(entries as i64);
            self.metrics.cache_bytes.set(bytes as i64);
        }
    }
}
