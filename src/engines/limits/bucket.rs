//! Buckets and the table of which ones apply to whom, built once from config.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::gcra::Shape;
use super::state::LimitState;
pub use super::subject::{Kind, Scope};
use crate::config::{Config, RateLimit};

/// One limit on one subject. The in-memory engine keeps its state here; the
/// Redis engine keeps it under `redis_key`.
pub struct Bucket {
    pub scope: Scope,
    pub name: Arc<str>,
    pub kind: Kind,
    pub shape: Shape,
    pub redis_key: String,
    /// TAT as f64 bits (in-memory engine only). Shared with the same
    /// bucket of earlier and later config snapshots (see `LimitState`).
    pub(super) tat: Arc<AtomicU64>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.scope.as_str(), self.name, self.kind)
    }
}

/// The RPM and TPM buckets of one subject.
#[derive(Default, Clone)]
pub struct Pair {
    pub requests: Option<Arc<Bucket>>,
    pub tokens: Option<Arc<Bucket>>,
}

/// Where a table's buckets come from: their shape and Redis key prefix from
/// the config, their state from the registry.
struct Maker<'a> {
    state: &'a LimitState,
    prefix: &'a str,
}

impl Pair {
    fn new(maker: &Maker<'_>, scope: Scope, name: &str, limit: RateLimit, burst: f64) -> Self {
        let prefix = maker.prefix;
        let make = |kind: Kind, limit: Option<u64>| {
            limit.map(|limit| {
                let suffix = match kind {
                    Kind::Requests => "rpm",
                    Kind::Tokens => "tpm",
                };
                Arc::new(Bucket {
                    scope,
                    name: Arc::from(name),
                    kind,
                    shape: Shape::new(limit, burst),
                    // One hash tag keeps every key in one cluster slot, so a
                    // multi-key script works on Redis Cluster too.
                    redis_key: format!("{{{prefix}}}:{}:{name}:{suffix}", scope.as_str()),
                    tat: maker.state.cell(scope, name, kind),
                })
            })
        };
        Self {
            requests: make(Kind::Requests, limit.rpm),
            tokens: make(Kind::Tokens, limit.tpm),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// The token bucket alone.
    pub fn tokens_only(&self) -> Self {
        Self {
            requests: None,
            tokens: self.tokens.clone(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Bucket>> {
        self.requests.iter().chain(self.tokens.iter())
    }
}

/// Every configured limit of one config snapshot, by subject (key id, org,
/// model, deployment name). Immutable once built, so lookups take no lock;
/// the buckets' levels live in `LimitState` and outlive it.
#[derive(Default)]
pub struct BucketTable {
    pub keys: HashMap<String, Pair>,
    pub orgs: HashMap<String, Pair>,
    pub models: HashMap<String, Pair>,
    pub deployments: HashMap<String, Pair>,
}

impl BucketTable {
    /// Buckets keep their state across snapshots: a key, org, model or
    /// deployment still configured finds its bucket's level in `state`.
    pub fn from_config(config: &Config, state: &LimitState) -> Self {
        let burst = config.limits.burst;
        let prefix = config
            .redis
            .as_ref()
            .map_or("sluice", |redis| redis.key_prefix.as_str());
        let maker = Maker { state, prefix };
        let mut table = Self::default();
        for key in &config.keys {
            let tier = key.tier.as_ref().and_then(|t| config.tiers.get(t));
            let limit = RateLimit {
                rpm: key.rpm.or(tier.and_then(|t| t.rpm)),
                tpm: key.tpm.or(tier.and_then(|t| t.tpm)),
            };
            insert(&maker, &mut table.keys, Scope::Key, key.id(), limit, burst);
        }
        for (name, limit) in &config.orgs {
            insert(&maker, &mut table.orgs, Scope::Org, name, *limit, burst);
        }
        for (name, settings) in &config.models {
            insert(
                &maker,
                &mut table.models,
                Scope::Model,
                name,
                settings.limit(),
                burst,
            );
        }
        for deployment in &config.deployments {
            let limit = RateLimit {
                rpm: deployment.rpm,
                tpm: deployment.tpm,
            };
            // Provider quotas are hard ceilings: no burst above them.
            insert(
                &maker,
                &mut table.deployments,
                Scope::Deployment,
                &deployment.name,
                limit,
                0.0,
            );
        }
        state.retain(|scope, name, kind| {
            let subjects = match scope {
                Scope::Key => &table.keys,
                Scope::Org => &table.orgs,
                Scope::Model => &table.models,
                Scope::Deployment => &table.deployments,
            };
            subjects.get(name).is_some_and(|pair| match kind {
                Kind::Requests => pair.requests.is_some(),
                Kind::Tokens => pair.tokens.is_some(),
            })
        });
        table
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.orgs.is_empty()
            && self.models.is_empty()
            && self.deployments.is_empty()
    }
}

fn insert(
    maker: &Maker<'_>,
    map: &mut HashMap<String, Pair>,
    scope: Scope,
    name: &str,
    limit: RateLimit,
    burst: f64,
) {
    let pair = Pair::new(maker, scope, name, limit, burst);
    if !pair.is_empty() {
        map.insert(name.to_owned(), pair);
    }
}
