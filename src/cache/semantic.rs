//! The semantic cache: on an exact miss, the final user message is embedded
//! through Sluice's own routing to `embedding_model`, and the nearest cached
//! answer in the same partition (see `key::semantic_parts`) is reused when its
//! cosine similarity reaches the threshold. A slow or failed embedding call
//! makes the request a plain miss. The index is in this process (HNSW) or,
//! with `store = "postgres"`, a pgvector table shared by replicas.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Value, json};

use super::key::CacheKey;
use super::semantic_index::SemanticIndex;
use super::semantic_pg::PgIndex;
use crate::config::{SemanticConfig, SemanticStore};
use crate::metrics::Metrics;
use crate::routing::ModelRoute;
use crate::upstream::{Endpoint, UpstreamClient, UpstreamRequest};

/// The largest embedding reply read (a 3072-dimension vector as JSON is
/// about 70 KB); a larger one is treated as a failed lookup.
const EMBEDDING_REPLY_LIMIT: usize = 1 << 20;

pub struct Semantic {
    config: SemanticConfig,
    route: Arc<ModelRoute>,
    client: UpstreamClient,
    index: Index,
}

enum Index {
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

impl Semantic {
    pub fn new(
        config: SemanticConfig,
        route: Arc<ModelRoute>,
        client: UpstreamClient,
        metrics: Metrics,
    ) -> Self {
        let index = match (config.store, config.postgres_url.as_deref()) {
            (SemanticStore::Postgres, Some(url)) => Index::Postgres(PgIndex::start(url, metrics)),
            _ => Index::Memory(RwLock::new(None)),
        };
        Self {
            config,
            route,
            client,
            index,
        }
    }

    /// Embeds the text; `None` on any failure or past the timeout.
    pub async fn embed(&self, partition: u64, text: &str) -> Option<Probe> {
        let backend = self
            .route
            .candidates(None, tokio::time::Instant::now())
            .usable
            .into_iter()
            .next()?;
        let body = json!({"model": &*self.route.name, "input": text});
        let request = UpstreamRequest {
            endpoint: Endpoint::Embeddings,
            client_model: self.route.name.clone(),
            body_model: self.route.name.clone(),
            body: Bytes::from(body.to_string()),
            request_id: None,
            openai_beta: None,
            content_type: None,
            stored: None,
        };
        let call = async {
            let response = self.client.send(&backend.deployment, request).await.ok()?;
            if !response.status.is_success() {
                return None;
            }
            let mut body = response.body;
            let mut bytes = Vec::new();
            while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                bytes.extend_from_slice(&chunk.ok()?);
                // One embedding of one message: anything larger is not that.
                if bytes.len() > EMBEDDING_REPLY_LIMIT {
                    return None;
                }
            }
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
    pub async fn nearest(&self, probe: &Probe) -> Option<CacheKey> {
        let threshold = self.config.threshold;
        match &self.index {
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
        match &self.index {
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
