//! What lives for the whole process, whatever config is in force: the task
//! set, metrics, the upstream client, store connections, and the registries
//! of live state keyed by stable names (limiter levels, deployment health and
//! slots, spend, cache entries and flights, degradation levels). Config snapshots are built on
//! top of these and replaced; these stay.
//!
//! The sections they are made from (`[redis]`, `[usage]`, `[responses]`,
//! `[batch]`, `[async_requests]`,
//! `[auth] failed_auth_per_minute`) and the listeners and connection settings
//! take effect at a restart only: a reload that changes them says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::StartError;
use crate::config::Provider;
use crate::config::{Config, RedisConfig};
use crate::engines::auth::{AuthGuard, FailedAuth};
use crate::engines::cache::CacheState;
use crate::engines::degrade::LadderState;
use crate::engines::internal::InternalCalls;
use crate::engines::jobs::Jobs;
use crate::engines::ledger::Ledger;
use crate::engines::limits::LimitState;
use crate::engines::metering::SpendState;
use crate::engines::queue::Scheduler;
use crate::engines::routing::{DeploymentStates, ResponsePins};
use crate::engines::tokens::Encoding;
use crate::infra::Shared;
use crate::infra::metrics::Metrics;
use crate::infra::redis::SharedRedis;
use crate::upstream::{Providers, UpstreamClient};
use crate::util::shutdown::{Cut, Draining, Warmed};
use crate::util::tasks::Tasks;

pub struct Registries {
    pub tasks: Tasks,
    pub metrics: Metrics,
    /// OpenTelemetry traces (`[otel]`): off without an endpoint.
    pub tracer: crate::infra::otel::Tracer,
    pub client: UpstreamClient,
    /// The providers answered in-process (the mock), by config name.
    pub providers: Providers,
    pub redis: Option<SharedRedis>,
    /// `[redis]` as started: every snapshot uses it (see `restart_only_changes`).
    pub redis_config: Option<RedisConfig>,
    pub ledger: Option<Arc<Ledger>>,
    pub pins: Arc<ResponsePins>,
    pub guard: AuthGuard,
    pub limits: LimitState,
    pub deployments: DeploymentStates,
    pub spend: Arc<SpendState>,
    pub cache: CacheState,
    /// Each model's degradation state (how long down, operator overrides).
    pub degradation: Arc<LadderState>,
    /// `[server] max_concurrency` slots; reshaped by each snapshot, used
    /// only while it is above 0.
    pub admission: Arc<Scheduler>,
    /// Fired when the shutdown grace period is over, to end open streams.
    pub cut: Cut,
    /// Raised when shutdown begins: `/readyz` answers 503 from then on.
    pub draining: Draining,
    /// Raised when the tokenizer tables are loaded: `/readyz` answers 503
    /// until then.
    pub warmed: Warmed,
    /// Files, batches and asynchronous jobs (`[batch] store`).
    pub jobs: Option<Arc<Jobs>>,
    /// Each key's open Realtime sessions.
    pub realtime_sessions: Arc<crate::dispatch::realtime::Sessions>,
}

impl Registries {
    pub fn start(
        config: &Config,
        tasks: Tasks,
        internal: Arc<dyn InternalCalls>,
    ) -> Result<Self, StartError> {
        crate::infra::storage_dirs::prepare(config).map_err(StartError::Build)?;
        let metrics = Metrics::new().map_err(|e| StartError::Build(format!("metrics: {e}")))?;
        let client =
            UpstreamClient::new(config.server.upstream_pools()).map_err(StartError::Build)?;
        let tracer = crate::infra::otel::Tracer::start(&config.otel, &metrics, &tasks)
            .map_err(StartError::Build)?;
        let redis = config
            .redis
            .as_ref()
            .map(|redis| SharedRedis::connect(&redis.url, redis.timeout, &tasks))
            .transpose()
            .map_err(StartError::Build)?;
        let ledger = Ledger::start(&config.usage, metrics.clone(), &tasks)
            .map_err(|e| StartError::Build(format!("usage.store: {e}")))?;
        let warmed = warm_tokenizers(ledger.is_some(), &tasks);
        let pins = Arc::new(ResponsePins::new(
            &config.responses,
            redis
                .as_ref()
                .zip(config.redis.as_ref().map(|r| r.key_prefix.as_str())),
        ));
        let guard = AuthGuard {
            throttle: FailedAuth::new(config.auth.failed_auth_per_minute).map(Arc::new),
            metrics: metrics.clone(),
        };
        let shared = Shared {
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            redis: redis.clone(),
        };
        let jobs = Jobs::open(config, internal, &shared, &client)
            .map_err(|e| StartError::Build(format!("batch.store: {e}")))?;
        Ok(Self {
            jobs,
            admission: Scheduler::new(
                config.server.max_concurrency,
                Arc::new(config.queue.clone()),
            ),
            tasks,
            metrics,
            tracer,
            client,
            // The edge registers the mock: `upstream` has no local provider of its own.
            providers: Providers::default().with_local(Provider::Mock, crate::mock::provider),
            redis,
            redis_config: config.redis.clone(),
            ledger,
            pins,
            guard,
            limits: LimitState::new(),
            deployments: DeploymentStates::default(),
            spend: Arc::default(),
            cache: CacheState::default(),
            degradation: Arc::default(),
            cut: Cut::default(),
            draining: Draining::default(),
            warmed,
            realtime_sessions: Arc::default(),
        })
    }
}

impl Registries {
    /// The process-wide handles engines are built with.
    pub fn shared(&self) -> Shared {
        Shared {
            metrics: self.metrics.clone(),
            tasks: self.tasks.clone(),
            redis: self.redis.clone(),
        }
    }
}

/// The settings a reload cannot change, named as in the config file, when
/// `next` differs from `running` in them.
pub fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    // By hash of the unredacted settings: a rotated password counts.
    let hash = |config: &Config, section: &str| config.view.sections.get(section).cloned();
    let mut changed = Vec::new();
    for section in [
        "redis",
        "usage",
        "responses",
        "log",
        "batch",
        "async_requests",
        "otel",
    ] {
        if hash(running, section) != hash(next, section) {
            changed.push(section);
        }
    }
    let server = (&running.server, &next.server);
    for (name, differs) in [
        ("server.listen", server.0.listen != server.1.listen),
        (
            "server.header_read_timeout",
            server.0.header_read_timeout != server.1.header_read_timeout,
        ),
        (
            "server.idle_timeout",
            server.0.idle_timeout != server.1.idle_timeout,
        ),
        (
            "server.max_connections",
            server.0.max_connections != server.1.max_connections,
        ),
        (
            "server.cors_origins",
            server.0.cors_origins != server.1.cors_origins,
        ),
        (
            "server.shutdown_grace",
            server.0.shutdown_grace != server.1.shutdown_grace,
        ),
        (
            "server.drain_delay",
            server.0.drain_delay != server.1.drain_delay,
        ),
        ("admin.listen", running.admin.listen != next.admin.listen),
        (
            "admin.keys_store",
            running.admin.keys_store != next.admin.keys_store,
        ),
        (
            "metrics.listen",
            running.metrics.listen != next.metrics.listen,
        ),
        (
            "auth.failed_auth_per_minute",
            running.auth.failed_auth_per_minute != next.auth.failed_auth_per_minute,
        ),
    ] {
        if differs {
            changed.push(name);
        }
    }
    changed
}

/// With a ledger, a stream cut short is recorded with its prompt counted,
/// and a record is journaled only once counted: the tables (most of a
/// second to load in a debug build, tens of milliseconds in release) load
/// before the replica says it is ready, so no record waits on them where a
/// `kill -9` could lose it.
fn warm_tokenizers(needed: bool, tasks: &Tasks) -> Warmed {
    if !needed {
        return Warmed::raised();
    }
    let warmed = Warmed::default();
    // One thread per table, so start-up waits for the slower one only.
    let loading = Arc::new(AtomicUsize::new(2));
    for encoding in [Encoding::O200k, Encoding::Cl100k] {
        let (raise, loading) = (warmed.clone(), loading.clone());
        drop(tasks.spawn_blocking(move || {
            encoding.warm();
            if loading.fetch_sub(1, Ordering::AcqRel) == 1 {
                raise.fire();
            }
        }));
    }
    warmed
}
