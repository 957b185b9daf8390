//! Rate limits: RPM and TPM per key (or its tier), per org, per model, and
//! per deployment (the provider's quota; a deployment without room is skipped
//! in favour of one with room, at admission and by the dispatcher's later
//! attempts, see `quotas`). GCRA buckets, in memory or in Redis.

mod bucket;
mod engine;
mod gcra;
mod memory;
mod quotas;
mod redis_store;
mod reply;
mod state;
mod subject;

use std::sync::Arc;

use axum::response::Response;

use self::bucket::{Bucket, BucketTable, Kind, Pair, Scope};
use self::engine::{Charge, Decision, Refused, StoreError};
use self::gcra::Standing;
use self::memory::MemoryEngine;
use self::redis_store::RedisEngine;
use crate::config::{Config, OnRedisError};
use crate::engines::routing::{Backend, ModelRoute};
use crate::engines::tokens::{BodyView, Encoding, Encodings, Estimator};
use crate::infra::Shared;
use crate::infra::metrics::Metrics;
use crate::infra::telemetry::LogEvery;
use crate::util::tasks::Tasks;
use crate::vocab::{Endpoint, Identity};

use self::quotas::CallState;
pub use quotas::{AttemptEnd, Charged, DeploymentQuotas, QuotaSkip, Settlement};
pub use state::LimitState;

enum Engine {
    Memory(MemoryEngine),
    Redis(RedisEngine),
}

pub struct Limiter {
    table: BucketTable,
    engine: Engine,
    on_error: OnRedisError,
    estimator: Estimator,
    encodings: Encodings,
    metrics: Metrics,
    store_log: LogEvery,
    /// Owns the Redis corrections of TPM charges.
    tasks: Tasks,
}

/// What the layer does with a request.
pub enum Check {
    /// No limit applies to it.
    Unlimited,
    Admitted(Admission),
    /// A 429 (or 503 when the store is down and set to fail closed).
    Refused(Response),
}

pub struct Admission {
    /// The backend with room, when deployments have quotas.
    pub backend: Option<Arc<Backend>>,
    /// For the dispatcher: charges the deployments of later attempts.
    pub quotas: DeploymentQuotas,
    /// Corrects the TPM charges once the real usage is known.
    pub settlement: Option<Settlement>,
    pub key_headers: KeyHeaders,
}

/// The key's own RPM and TPM buckets, for `x-ratelimit-*` on the response.
#[derive(Default, Clone, Copy)]
pub struct KeyHeaders {
    requests: Option<Standing>,
    tokens: Option<Standing>,
}

impl KeyHeaders {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        reply::set_key_headers(headers, self.requests, self.tokens);
    }
}

/// What the limiter reads of a call.
#[derive(Clone, Copy)]
pub struct CallFacts<'a> {
    pub route: &'a ModelRoute,
    pub view: &'a Arc<BodyView>,
    pub endpoint: Endpoint,
    /// For `prefix_affinity` routing of the deployment charged.
    pub affinity: Option<u64>,
}

/// The buckets one request is checked against.
struct Subject<'a> {
    required: Vec<Charge<'a>>,
    key_requests: Option<usize>,
    key_tokens: Option<usize>,
    candidates: Vec<(Arc<Backend>, Vec<Charge<'a>>)>,
}

impl Limiter {
    /// `None` when the config sets no limit at all: the layer is then left out.
    pub fn from_config(config: &Config, state: &LimitState, shared: &Shared) -> Option<Self> {
        let (redis, metrics, tasks) = (
            shared.redis.as_ref(),
            shared.metrics.clone(),
            shared.tasks.clone(),
        );
        let table = BucketTable::from_config(config, state);
        if table.is_empty() {
            return None;
        }
        let engine = match redis {
            Some(redis) => Engine::Redis(RedisEngine::new(redis.clone())),
            None => Engine::Memory(MemoryEngine::new(state.epoch)),
        };
        let encodings = Encodings::from_config(&config.models);
        let counts_tokens = table
            .keys
            .values()
            .chain(table.orgs.values())
            .chain(table.models.values())
            .chain(table.deployments.values())
            .any(|pair| pair.tokens.is_some());
        if counts_tokens {
            Encoding::O200k.warm();
            Encoding::Cl100k.warm();
        }
        Some(Self {
            table,
            engine,
            on_error: config
                .redis
                .as_ref()
                .map_or_else(OnRedisError::default, |r| r.on_error),
            estimator: Estimator {
                default_max_tokens: config.limits.default_max_tokens,
            },
            encodings,
            metrics,
            store_log: LogEvery::store_failures(),
            tasks,
        })
    }

    pub async fn check(self: &Arc<Self>, identity: &Identity, api: CallFacts<'_>) -> Check {
        let model = &*api.route.name;
        let key = self.table.keys.get(&*identity.id);
        let org = identity
            .org
            .as_deref()
            .and_then(|org| self.table.orgs.get(org));
        // A call Sluice makes for a key (a semantic-cache embedding) spends
        // its tokens but not its requests: the client made one request.
        let (internal_key, internal_org);
        let (key, org) = if identity.internal {
            internal_key = key.map(Pair::tokens_only);
            internal_org = org.map(Pair::tokens_only);
            (internal_key.as_ref(), internal_org.as_ref())
        } else {
            (key, org)
        };
        let model_pair = self.table.models.get(model);
        let limits_deployments = api
            .route
            .backends()
            .any(|b| self.table.deployments.contains_key(&*b.deployment.name));
        // A fallback model's deployments may have quotas the dispatcher charges.
        let may_fall_back = !api.route.fallbacks.is_empty() && !self.table.deployments.is_empty();
        if key.is_none()
            && org.is_none()
            && model_pair.is_none()
            && !limits_deployments
            && !may_fall_back
        {
            return Check::Unlimited;
        }
        let counts_tokens = [key, org, model_pair]
            .iter()
            .flatten()
            .any(|p| p.tokens.is_some())
            || api.route.backends().any(|b| {
                self.table
                    .deployments
                    .get(&*b.deployment.name)
                    .is_some_and(|p| p.tokens.is_some())
            })
            || (may_fall_back && self.table.deployments.values().any(|p| p.tokens.is_some()));
        let tokens = if counts_tokens {
            self.estimate(api).await
        } else {
            0
        };
        let subject = self.subject(key, org, model_pair, limits_deployments, api, tokens);
        let decision = match &self.engine {
            // Only fallbacks may be charged: nothing to check up front.
            _ if subject.required.is_empty() && subject.candidates.is_empty() => Decision {
                result: Ok(None),
                standings: Vec::new(),
            },
            Engine::Memory(engine) => engine.admit(&subject.required, &candidate_charges(&subject)),
            Engine::Redis(engine) => {
                match engine
                    .admit(&subject.required, &candidate_charges(&subject))
                    .await
                {
                    Ok(decision) => decision,
                    Err(error) => return self.store_failed(&error),
                }
            }
        };
        let key_headers = key_headers(&subject, &decision);
        match decision.result {
            Ok(chosen) => Check::Admitted(self.admission(&subject, chosen, tokens, key_headers)),
            Err(refused) => {
                let mut response = self.refusal(&subject, &refused, tokens, &api.route.name);
                key_headers.apply(response.headers_mut());
                Check::Refused(response)
            }
        }
    }

    /// Prompt plus expected output tokens. The prompt is counted through
    /// the call's view: once per call, off the async threads when large.
    async fn estimate(&self, api: CallFacts<'_>) -> u64 {
        let encoding = self.encodings.of(&api.route.name);
        let prompt = api.view.prompt_tokens(encoding).await;
        prompt.saturating_add(self.estimator.output(api.endpoint, api.view.json()))
    }

    fn subject<'a>(
        &'a self,
        key: Option<&'a Pair>,
        org: Option<&'a Pair>,
        model: Option<&'a Pair>,
        limits_deployments: bool,
        api: CallFacts<'_>,
        tokens: u64,
    ) -> Subject<'a> {
        let charge = |bucket: &'a Arc<Bucket>| Charge {
            bucket,
            units: match bucket.kind {
                Kind::Requests => 1,
                Kind::Tokens => tokens,
            },
        };
        let mut subject = Subject {
            required: Vec::with_capacity(6),
            key_requests: None,
            key_tokens: None,
            candidates: Vec::new(),
        };
        if let Some(key) = key {
            if let Some(bucket) = &key.requests {
                subject.key_requests = Some(subject.required.len());
                subject.required.push(charge(bucket));
            }
            if let Some(bucket) = &key.tokens {
                subject.key_tokens = Some(subject.required.len());
                subject.required.push(charge(bucket));
            }
        }
        for pair in [org, model].into_iter().flatten() {
            subject.required.extend(pair.iter().map(charge));
        }
        if limits_deployments {
            // Usable backends in the model's strategy order; the first with
            // quota room is charged and chosen.
            let now = tokio::time::Instant::now();
            subject.candidates = api
                .route
                .candidates(api.affinity, now)
                .usable
                .into_iter()
                .map(|backend| {
                    let charges = self
                        .table
                        .deployments
                        .get(&*backend.deployment.name)
                        .map(|pair| pair.iter().map(charge).collect())
                        .unwrap_or_default();
                    (backend, charges)
                })
                .collect();
        }
        subject
    }

    fn admission(
        self: &Arc<Self>,
        subject: &Subject<'_>,
        chosen: Option<usize>,
        tokens: u64,
        key_headers: KeyHeaders,
    ) -> Admission {
        let chosen = chosen.and_then(|index| subject.candidates.get(index));
        let call_wide: Vec<Arc<Bucket>> = subject
            .required
            .iter()
            .filter(|charge| charge.bucket.kind == Kind::Tokens)
            .map(|charge| charge.bucket.clone())
            .collect();
        let limits_deployments = !self.table.deployments.is_empty();
        let state = (limits_deployments || !call_wide.is_empty()).then(|| {
            let prepaid = chosen
                .and_then(|(backend, _)| self.table.deployments.get(&*backend.deployment.name));
            CallState::new(self.clone(), tokens, prepaid.cloned())
        });
        let quotas = match &state {
            Some(state) if limits_deployments => DeploymentQuotas::of(state.clone()),
            _ => DeploymentQuotas::default(),
        };
        let settlement = state.map(|state| Settlement {
            state,
            tokens: call_wide,
        });
        Admission {
            backend: chosen.map(|(backend, _)| backend.clone()),
            quotas,
            key_headers,
            settlement,
        }
    }

    fn refusal(
        &self,
        subject: &Subject<'_>,
        refused: &Refused,
        tokens: u64,
        model: &str,
    ) -> Response {
        let all: Vec<&Charge<'_>> = subject
            .required
            .iter()
            .chain(subject.candidates.iter().flat_map(|(_, charges)| charges))
            .collect();
        let Some(charge) = all.get(refused.position()) else {
            return reply::store_unavailable();
        };
        let bucket = charge.bucket;
        self.metrics
            .rate_limited
            .with_label_values(&[bucket.scope.as_str(), bucket.kind.as_str()])
            .inc();
        let every_deployment = bucket.scope == Scope::Deployment && subject.candidates.len() > 1;
        reply::rate_limited(reply::Refusal {
            bucket,
            refused,
            requested: if bucket.kind == Kind::Tokens {
                tokens
            } else {
                1
            },
            model,
            every_deployment,
        })
    }

    fn store_failed(&self, error: &StoreError) -> Check {
        match self.store_policy(error) {
            OnRedisError::FailOpen => {
                self.metrics.limiter_fail_open.inc();
                Check::Unlimited
            }
            OnRedisError::FailClosed => Check::Refused(reply::store_unavailable()),
        }
    }

    /// Counts and (at most every 10 s) logs a store failure; returns the policy.
    fn store_policy(&self, error: &StoreError) -> OnRedisError {
        self.metrics.limiter_store_errors.inc();
        if self.store_log.due() {
            tracing::error!(%error, policy = self.on_error.as_str(), "rate-limit store failed; applying redis.on_error");
        }
        self.on_error
    }

    async fn adjust_shared(&self, changes: &[(&Bucket, i64)]) {
        if let Engine::Redis(engine) = &self.engine
            && let Err(error) = engine.adjust(changes).await
        {
            self.metrics.limiter_store_errors.inc();
            if self.store_log.due() {
                tracing::warn!(%error, "could not correct a TPM charge");
            }
        }
    }
}

fn key_headers(subject: &Subject<'_>, decision: &Decision) -> KeyHeaders {
    let standing = |position: Option<usize>| {
        let position = position?;
        let mut standing = *decision.standings.get(position)?;
        standing.limit = subject.required.get(position)?.bucket.shape.limit();
        Some(standing)
    };
    KeyHeaders {
        requests: standing(subject.key_requests),
        tokens: standing(subject.key_tokens),
    }
}

fn candidate_charges<'a>(subject: &Subject<'a>) -> Vec<Vec<Charge<'a>>> {
    subject
        .candidates
        .iter()
        .map(|(_, charges)| charges.clone())
        .collect()
}
