//! The semantic cache: on an exact miss, the final user message is embedded
//! through Sluice's own routing to `embedding_model`, and the nearest cached
//! answer in the same partition (see `key::semantic_parts`) is reused when its
//! cosine similarity reaches the threshold. A slow or failed embedding call
//! makes the request a plain miss. The index is in this process (HNSW) or,
//! with `store = "postgres"`, a pgvector table shared by replicas.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::key::CacheKey;
use super::semantic_index::SemanticIndex;
use super::semantic_pg::PgIndex;
use crate::config::{SemanticConfig, SemanticStore};
use crate::engines::internal::{InternalCalls, SEMANTIC_CACHE_TAG};
use crate::infra::metrics::Metrics;
use crate::infra::otel::LiveSpan;
use crate::util::tasks::Tasks;
use crate::vocab::Identity;

/// The largest embedding reply read (a 3072-dimension vector as JSON is
/// about 70 KB); a larger one is treated as a failed lookup.
const EMBEDDING_REPLY_LIMIT: usize = 1 << 20;

pub struct Semantic {
    config: SemanticConfig,
    /// Embeddings go through the pipeline, as the key the lookup serves.
    internal: Arc<dyn InternalCalls>,
    /// Shared with the other snapshots that have the same semantic store.
    index: Arc<Index>,
}

pub enum Index {
    /// Created on the first vector, when the embedding size is known.
    /// Lookups share the read lock; inserts (one per stored miss) take it
    /// briefly.
    Memory(RwLock<Option<SemanticIndex>>),
    Postgres(PgIndex),
}

/// An embedded request, kept until its answer is stored.
#[derive(Clone)]
pub struct Probe {
    pub partition: u64,
    pub vector: Vec<f32>,
}

impl Index {
    /// What decides whether two snapshots can share an index.
    pub fn fingerprint(config: &SemanticConfig) -> String {
        format!(
            "{:?}\n{:?}\n{}",
            config.store, config.postgres_url, config.max_entries
        )
    }

    pub fn new(config: &SemanticConfig, metrics: Metrics, tasks: &Tasks) -> Self {
        match (config.store, config.postgres_url.as_deref()) {
            (SemanticStore::Postgres, Some(url)) => {
                Index::Postgres(PgIndex::start(url, metrics, tasks))
            }
            _ => Index::Memory(RwLock::new(None)),
        }
    }
}

impl Semantic {
    pub fn new(
        config: SemanticConfig,
        internal: Arc<dyn InternalCalls>,
        index: Arc<Index>,
    ) -> Self {
        Self {
            config,
            internal,
            index,
        }
    }

    /// Embeds the text as a call of `identity`'s (its budgets, limits and
    /// ledger), under the client call's request id and trace span (`trace`,
    /// whose child the embedding's span becomes) so the two can be tied
    /// together; `None` on any failure or past the timeout.
    pub async fn embed(
        &self,
        identity: &Identity,
        (request_id, trace): (Option<&http::HeaderValue>, Option<&LiveSpan>),
        partition: u64,
        text: &str,
    ) -> Option<Probe> {
        let body = json!({"model": &self.config.embedding_model, "input": text});
        let mut request = Request::post("/v1/embeddings")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(crate::util::headers::X_SLUICE_TAG, SEMANTIC_CACHE_TAG)
            .body(Body::from(body.to_string()))
            .ok()?;
        if let Some(id) = request_id {
            request
                .headers_mut()
                .insert(crate::util::headers::X_REQUEST_ID, id.clone());
        }
        request
            .extensions_mut()
            .insert(Arc::new(identity.acting_internally()));
        if let Some(parent) = trace {
            request.extensions_mut().insert(parent.clone());
        }
        let call = async {
            let response = self.internal.call(request).await;
            if !response.status().is_success() {
                return None;
            }
            // One embedding of one message: anything larger is not that.
            let limited = http_body_util::Limited::new(response.into_body(), EMBEDDING_REPLY_LIMIT);
            let bytes = limited.collect().await.ok()?.to_bytes();
            let reply: Value = serde_json::from_slice(&bytes).ok()?;
            let vector: Vec<f32> = reply["data"][0]["embedding"]
                .as_array()?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<_>>()?;
            Some(vector)
        };
        let vector = tokio::time::timeout(self.config.timeout, call)
            .await
            .ok()??;
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm > 0.0).then(|| Probe {
            partition,
            vector: vector.iter().map(|x| x / norm).collect(),
        })
    }

    /// The nearest live entry at or above the threshold; a shared index
    /// that is slow or down makes this a miss.
    pub async fn nearest(&self, probe: &Probe, degraded: bool) -> Option<CacheKey> {
        let threshold = threshold(&self.config, degraded);
        match &*self.index {
            Index::Memory(index) => {
                let index = index.read().ok()?;
                let (key, _) = index.as_ref()?.nearest(
                    probe.partition,
                    &probe.vector,
                    threshold,
                    Instant::now(),
                )?;
                Some(key)
            }
            Index::Postgres(index) => {
                let lookup = index.nearest(probe.partition, &probe.vector, threshold);
                tokio::time::timeout(self.config.timeout, lookup)
                    .await
                    .ok()?
            }
        }
    }

    pub fn insert(&self, probe: Probe, key: CacheKey, expires: Instant) {
        match &*self.index {
            Index::Memory(index) => {
                if let Ok(mut index) = index.write() {
                    let index = index.get_or_insert_with(|| {
                        SemanticIndex::new(probe.vector.len(), self.config.max_entries, 0x5eed)
                    });
                    index.insert(probe.partition, probe.vector, key, expires);
                }
            }
            Index::Postgres(index) => index.insert(probe.partition, probe.vector, key, expires),
        }
    }
}

/// The similarity a match needs: `degraded_threshold` (when set) while the
/// model is degraded, else `threshold`.
fn threshold(config: &SemanticConfig, degraded: bool) -> f32 {
    match config.degraded_threshold {
        Some(looser) if degraded => looser,
        _ => config.threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_looser_threshold_applies_only_while_degraded() {
        let looser = SemanticConfig {
            threshold: 0.95,
            degraded_threshold: Some(0.85),
            ..SemanticConfig::default()
        };
        assert_eq!(threshold(&looser, false), 0.95);
        assert_eq!(threshold(&looser, true), 0.85);
        let unset = SemanticConfig {
            degraded_threshold: None,
            ..looser
        };
        assert_eq!(threshold(&unset, true), 0.95);
    }
}
