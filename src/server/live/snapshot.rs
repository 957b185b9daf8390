//! One config snapshot: everything derived from a config (the router, keys,
//! policies, limit shapes, retry and breaker settings, the stages built from
//! them) as one immutable value. A call loads the snapshot in force once and
//! keeps it for its whole life, streams included; a reload builds the next
//! one beside it and swaps. Live state is not here but in the registries,
//! which every snapshot shares.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::registries::Registries;
use crate::config::Config;
use crate::dispatch::{Dispatcher, DispatcherParts};
use crate::engines::auth::KeyStore;
use crate::engines::cache::{CacheParts, ResponseCache};
use crate::engines::degrade::Ladder;
use crate::engines::internal::InternalCalls;
use crate::engines::limits::Limiter;
use crate::engines::metering::{Budgets, Pricing, SystemClock};
use crate::engines::policy::Policies;
use crate::engines::routing::ModelRouter;
use crate::engines::tokens::Encodings;
use crate::stages::AsyncIntake;
use crate::stages::RequestReader;
use crate::stages::{Estimates, RecordUsage};
use crate::upstream::{Deployment, Providers};
use crate::util::tasks::Tasks;

use super::super::admin::AdminToken;
use super::super::stack::{self, Apart, Apps};

pub struct Snapshot {
    /// The config in force: the file's, with the runtime keys merged in.
    pub config: Arc<Config>,
    /// The file's config alone, for the next merge of runtime keys.
    pub file: Arc<Config>,
    pub loaded_at: SystemTime,
    pub apps: Apps,
    /// `[admin] token`; the admin routes exist only while one is set.
    pub admin: Option<AdminToken>,
    /// The loops of this snapshot (health probes), stopped when it is replaced.
    pub loops: Tasks,
    /// The keys in force, for work Sluice runs later on a key's behalf.
    pub keys: Arc<KeyStore>,
    /// Every model name a call may ask for: deployments' and virtual ones.
    pub models: HashSet<Arc<str>>,
    /// The router its dispatcher uses: batches find the deployment they are
    /// forwarded to (`batch = "upstream"`) here.
    pub router: Arc<ModelRouter>,
    /// The degradation ladder: async jobs wait while their model is in maintenance.
    pub ladder: Arc<Ladder>,
    /// Prices and budgets for work the pipeline did not see (forwarded
    /// batches, `forwarded::meter`).
    pub pricing: Arc<Pricing>,
    pub budgets: Option<Arc<Budgets>>,
}

impl Snapshot {
    /// Everything that can fail is done before a registry is touched, so a
    /// config that fails here leaves the running one and its state intact.
    pub fn build(
        file: Arc<Config>,
        config: Arc<Config>,
        registries: &Registries,
        internal: Arc<dyn InternalCalls>,
        apart: Apart,
    ) -> Result<Self, String> {
        let deployments = build_deployments(&config, &registries.providers)?;
        let pricing = Arc::new(Pricing::new(&config.pricing));
        let cache = build_cache(&config, registries, internal, &pricing)?;
        let router = Arc::new(ModelRouter::new(
            &config,
            deployments,
            &registries.deployments,
        ));
        let loops = registries.tasks.child();
        crate::engines::routing::probe::spawn(
            router.clone(),
            registries.client.clone(),
            config.health_probe.clone(),
            &loops,
        );
        let ladder = Arc::new(Ladder::new(
            &config.degradation,
            config.static_responses.clone(),
            &config.models,
            registries.degradation.clone(),
            router.clone(),
            registries.metrics.clone(),
        ));
        ladder.watch(&loops);
        let admin = config.admin.token.as_deref().map(|token| AdminToken {
            digest: crate::config::sha256(token),
            guard: registries.guard.clone(),
        });
        let keys = Arc::new(KeyStore::new(&config.auth, &config.keys));
        let budgets = Budgets::from_config(
            &config,
            &registries.spend,
            Arc::new(SystemClock),
            &registries.shared(),
        )
        .map(Arc::new);
        let services = services(
            &config,
            registries,
            Engines {
                router: router.clone(),
                cache,
                pricing: pricing.clone(),
                ladder: ladder.clone(),
                admin: admin.clone(),
                keys: keys.clone(),
                budgets: budgets.clone(),
            },
        );
        Ok(Self {
            apps: stack::inner(services, apart),
            models: served_models(&config, &router),
            config,
            file,
            loaded_at: SystemTime::now(),
            admin,
            loops,
            keys,
            router,
            ladder,
            pricing,
            budgets,
        })
    }
}

/// What `Snapshot::build` made before the stages are put together.
struct Engines {
    router: Arc<ModelRouter>,
    cache: Option<Arc<ResponseCache>>,
    pricing: Arc<Pricing>,
    ladder: Arc<Ladder>,
    admin: Option<AdminToken>,
    keys: Arc<KeyStore>,
    budgets: Option<Arc<Budgets>>,
}

fn build_cache(
    config: &Config,
    registries: &Registries,
    internal: Arc<dyn InternalCalls>,
    pricing: &Arc<Pricing>,
) -> Result<Option<Arc<ResponseCache>>, String> {
    let cache = ResponseCache::from_config(
        config,
        CacheParts {
            state: &registries.cache,
            redis: registries.redis.as_ref(),
            internal,
            metrics: registries.metrics.clone(),
            pricing: pricing.clone(),
            tasks: registries.tasks.clone(),
        },
    )?;
    Ok(cache.map(Arc::new))
}

/// The stages and the dispatcher of one snapshot, on its engines and the
/// registries.
fn services(config: &Config, registries: &Registries, engines: Engines) -> stack::Services {
    let metrics = registries.metrics.clone();
    let admission = (config.server.max_concurrency > 0).then(|| {
        registries.admission.reshape(
            config.server.max_concurrency,
            Arc::new(config.queue.clone()),
        );
        registries.admission.clone()
    });
    let reader = RequestReader::new(
        engines.router.clone(),
        Policies::from_config(config, metrics.clone()),
        admission.clone(),
        metrics.clone(),
        config,
        registries.pins.clone(),
    );
    let limiter =
        Limiter::from_config(config, &registries.limits, &registries.shared()).map(Arc::new);
    stack::Services {
        ledger: registries.ledger.clone().map(|ledger| RecordUsage {
            ledger,
            estimates: Arc::new(Estimates {
                pricing: engines.pricing.clone(),
                encodings: Encodings::from_config(&config.models),
                tasks: registries.tasks.clone(),
            }),
        }),
        dispatcher: Arc::new(Dispatcher::new(
            DispatcherParts {
                router: engines.router,
                client: registries.client.clone(),
                cut: registries.cut.clone(),
                metrics: metrics.clone(),
                pricing: engines.pricing,
                pins: registries.pins.clone(),
                sessions: registries.realtime_sessions.clone(),
                tasks: registries.tasks.clone(),
            },
            config,
        )),
        async_intake: registries
            .jobs
            .clone()
            .filter(|jobs| jobs.async_requests.enabled)
            .map(|jobs| {
                Arc::new(AsyncIntake {
                    jobs,
                    max_body_bytes: config.server.max_body_bytes,
                    body_read_timeout: config.server.body_read_timeout,
                })
            }),
        ladder: engines.ladder,
        budgets: engines.budgets,
        admission,
        cache: engines.cache,
        admin: engines.admin,
        keys: engines.keys,
        draining: registries.draining.clone(),
        warmed: registries.warmed.clone(),
        jobs: registries.jobs.clone(),
        guard: registries.guard.clone(),
        reader: Arc::new(reader),
        limiter,
        metrics,
    }
}

fn served_models(config: &Config, router: &ModelRouter) -> HashSet<Arc<str>> {
    let virtual_names = config
        .routes
        .iter()
        .map(|route| route.name.as_str())
        .chain(config.auto.iter().map(|auto| auto.name.as_str()))
        .chain(config.splits.iter().map(|split| split.name.as_str()));
    router
        .model_names()
        .iter()
        .cloned()
        .chain(virtual_names.map(Arc::from))
        .collect()
}

fn build_deployments(
    config: &Config,
    providers: &Providers,
) -> Result<Vec<Arc<Deployment>>, String> {
    config
        .deployments
        .iter()
        .enumerate()
        .map(|(index, deployment)| {
            Deployment::from_config(deployment, providers)
                .map(Arc::new)
                .map_err(|e| format!("deployments[{index}]: {e}"))
        })
        .collect()
}
