//! Which deployment serves a request: model name -> priority groups of
//! backends (a deployment plus its health) -> the usable ones, ordered by the
//! model's balancing strategy. Built once at start-up; health is atomics.

mod adaptive;
mod breaker;
mod budget;
mod health;
mod hedge;
pub(crate) mod hints;
mod pins;
pub mod probe;
mod states;
mod strategy;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{Config, Strategy};
use crate::engines::queue::Scheduler;
use crate::upstream::Deployment;

pub use adaptive::{AdaptiveLimit, Signal as LimitSignal};
pub use breaker::{Permit, State as BreakerState};
pub use budget::RetryBudget;
pub use health::{Health, Unusable};
pub use hedge::Hedge;
pub use hints::retry_after;
pub use pins::{ResponsePin, ResponsePins, valid_id};
pub use states::DeploymentStates;

/// A deployment and what routing knows about its state.
pub struct Backend {
    pub deployment: Arc<Deployment>,
    /// Shared with the same deployment in other config snapshots.
    pub health: Arc<Health>,
    /// `max_concurrency` slots and their queue, when the deployment has a limit.
    pub slots: Option<Arc<Scheduler>>,
    /// With `concurrency = "adaptive"`: what sets the slots' capacity.
    pub adaptive: Option<Arc<AdaptiveLimit>>,
}

/// Backends sharing one priority number.
struct PriorityGroup {
    priority: i32,
    members: Vec<Arc<Backend>>,
}

/// Everything that serves one client-visible model.
pub struct ModelRoute {
    pub name: Arc<str>,
    groups: Vec<PriorityGroup>,
    pub strategy: Strategy,
    /// Weights scaled by the headroom each deployment reports.
    pub headroom: bool,
    /// Models to serve from when none of this one's backends is usable.
    pub fallbacks: Vec<Arc<str>>,
    /// Kept across reloads (`DeploymentStates::retry_budget`), and shared
    /// with the model's pinned routes.
    pub budget: Arc<RetryBudget>,
    /// Hedged requests, when the model asks for them; kept across reloads
    /// like the budget (`DeploymentStates::hedge`).
    pub hedge: Option<Arc<Hedge>>,
}

/// The usable backends for one call, best first; or when one frees up.
pub struct Candidates {
    pub usable: Vec<Arc<Backend>>,
    /// The earliest time an unusable backend becomes usable again.
    pub earliest: Option<Instant>,
}

impl ModelRoute {
    /// Usable backends, best first: the lowest priority group with any usable
    /// member first, ordered within it by the strategy, then the next groups.
    pub fn candidates(&self, affinity: Option<u64>, now: Instant) -> Candidates {
        let mut usable = Vec::with_capacity(4);
        let mut earliest: Option<Instant> = None;
        for group in &self.groups {
            let start = usable.len();
            for backend in &group.members {
                match backend.health.usable(now) {
                    Ok(()) => usable.push(backend.clone()),
                    Err(unusable) => {
                        let until = unusable.until();
                        earliest = Some(earliest.map_or(until, |e| e.min(until)));
                    }
                }
            }
            let weights = strategy::Weights {
                headroom: self.headroom,
                now,
            };
            strategy::order(self.strategy, &mut usable[start..], affinity, weights);
            // Within the group, a backend with a free slot before one whose
            // callers would queue (stable: the strategy's order otherwise).
            usable[start..].sort_by_key(|b| b.slots.as_ref().is_some_and(|s| !s.has_room()));
        }
        Candidates { usable, earliest }
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.groups.iter().flat_map(|g| g.members.iter())
    }

    /// Whether any of the model's deployments is `provider`'s.
    pub fn has_provider(&self, provider: crate::config::Provider) -> bool {
        self.backends()
            .any(|backend| backend.deployment.provider == provider)
    }

    /// This model served by `backend` alone, without fallbacks: for calls on
    /// a stored response, which only its own deployment can answer.
    fn pinned_to(&self, backend: &Arc<Backend>) -> Self {
        Self {
            name: self.name.clone(),
            groups: vec![PriorityGroup {
                priority: backend.deployment.priority,
                members: vec![backend.clone()],
            }],
            strategy: self.strategy,
            headroom: self.headroom,
            fallbacks: Vec::new(),
            budget: self.budget.clone(),
            // One deployment: no second one to hedge on.
            hedge: None,
        }
    }
}

pub struct ModelRouter {
    routes: HashMap<String, Arc<ModelRoute>>,
    /// Each model's route pinned to each of its deployments, built once.
    pinned: HashMap<String, Vec<Arc<ModelRoute>>>,
    /// Sorted names, for `/v1/models`.
    names: Vec<Arc<str>>,
    /// The served models in config order (deployments, then each one's
    /// list), for a default that follows the operator's order.
    in_config_order: Vec<Arc<str>>,
    backends: Vec<Arc<Backend>>,
}

impl ModelRouter {
    /// `deployments` are the built `config.deployments`, in order; their
    /// state comes from (and stays in) `states`.
    pub fn new(
        config: &Config,
        deployments: Vec<Arc<Deployment>>,
        states: &DeploymentStates,
    ) -> Self {
        let backends: Vec<Arc<Backend>> = deployments
            .into_iter()
            .zip(&config.deployments)
            .map(|(deployment, settings)| states.backend(deployment, settings, config))
            .collect();
        states.retain(config);
        let mut by_model: HashMap<&str, Vec<&Arc<Backend>>> = HashMap::new();
        for (backend, deployment) in backends.iter().zip(&config.deployments) {
            for model in &deployment.models {
                by_model.entry(model).or_default().push(backend);
            }
        }
        let mut routes = HashMap::new();
        for (model, mut members) in by_model {
            members.sort_by_key(|b| b.deployment.priority);
            let mut groups: Vec<PriorityGroup> = Vec::new();
            for backend in members {
                match groups.last_mut() {
                    Some(group) if group.priority == backend.deployment.priority => {
                        group.members.push(backend.clone())
                    }
                    _ => groups.push(PriorityGroup {
                        priority: backend.deployment.priority,
                        members: vec![backend.clone()],
                    }),
                }
            }
            let settings = config.models.get(model);
            let route = ModelRoute {
                name: Arc::from(model),
                groups,
                strategy: settings.map(|s| s.strategy).unwrap_or_default(),
                headroom: settings.is_none_or(|s| s.headroom),
                fallbacks: settings
                    .map(|s| s.fallbacks.iter().map(|f| Arc::from(f.as_str())).collect())
                    .unwrap_or_default(),
                budget: states.retry_budget(model, config),
                hedge: settings
                    .and_then(|s| s.hedge)
                    .map(|hedge| states.hedge(model, hedge)),
            };
            routes.insert(model.to_owned(), Arc::new(route));
        }
        let pinned = routes
            .iter()
            .map(|(model, route)| {
                let pins = route
                    .backends()
                    .map(|backend| Arc::new(route.pinned_to(backend)))
                    .collect();
                (model.clone(), pins)
            })
            .collect();
        let virtual_names = config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .chain(config.auto.iter().map(|a| a.name.as_str()))
            .chain(config.splits.iter().map(|s| s.name.as_str()));
        let mut names: Vec<Arc<str>> = routes
            .values()
            .map(|r| r.name.clone())
            .chain(virtual_names.map(Arc::from))
            .collect();
        names.sort();
        let mut in_config_order: Vec<Arc<str>> = Vec::new();
        for model in config.deployments.iter().flat_map(|d| &d.models) {
            if !in_config_order.iter().any(|known| **known == **model) {
                in_config_order.push(Arc::from(model.as_str()));
            }
        }
        Self {
            routes,
            pinned,
            names,
            in_config_order,
            backends,
        }
    }

    pub fn route(&self, model: &str) -> Option<&Arc<ModelRoute>> {
        self.routes.get(model)
    }

    /// `model` served only by the deployment named `deployment`; `None` when
    /// that deployment does not serve it (or is no longer configured).
    pub fn pinned(&self, model: &str, deployment: &str) -> Option<&Arc<ModelRoute>> {
        self.pinned.get(model)?.iter().find(|route| {
            route
                .backends()
                .any(|backend| &*backend.deployment.name == deployment)
        })
    }

    /// The first served model, in config order, that `accept` takes.
    pub fn first_route(&self, accept: impl Fn(&str) -> bool) -> Option<&Arc<ModelRoute>> {
        self.in_config_order
            .iter()
            .filter(|model| accept(model))
            .find_map(|model| self.routes.get(&**model))
    }

    pub fn model_names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Every backend once, in config order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;

    fn router(toml: &str) -> ModelRouter {
        let config = load_from_str(toml, "t", &HashMap::new()).unwrap();
        let deployments = config
            .deployments
            .iter()
            .map(|d| {
                let providers = crate::upstream::Providers::default()
                    .with_local(crate::config::Provider::Mock, crate::mock::provider);
                Arc::new(Deployment::from_config(d, &providers).unwrap())
            })
            .collect();
        ModelRouter::new(&config, deployments, &DeploymentStates::default())
    }

    const THREE: &str = r#"
        [[deployments]]
        name = "backup"
        provider = "mock"
        models = ["m"]
        priority = 5
        [[deployments]]
        name = "heavy"
        provider = "mock"
        models = ["m"]
        weight = 3
        [[deployments]]
        name = "light"
        provider = "mock"
        models = ["m"]
    "#;

    #[test]
    fn lowest_priority_group_first_and_weights_split_traffic() {
        let router = router(THREE);
        let route = router.route("m").unwrap();
        let priorities: Vec<i32> = route.groups.iter().map(|g| g.priority).collect();
        assert_eq!(priorities, vec![0, 5]);
        let mut heavy = 0;
        for _ in 0..20_000 {
            let candidates = route.candidates(None, Instant::now());
            let names: Vec<&str> = candidates
                .usable
                .iter()
                .map(|b| &*b.deployment.name)
                .collect();
            assert_eq!(names.len(), 3);
            assert_eq!(names[2], "backup", "the higher priority number comes last");
            heavy += usize::from(names[0] == "heavy");
        }
        let share = heavy as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "heavy share {share}");
        assert!(router.route("other").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unusable_backends_are_skipped_and_report_when_they_return() {
        let router = router(THREE);
        let route = router.route("m").unwrap();
        let now = Instant::now();
        for backend in router.backends().iter().take(2) {
            backend
                .health
                .throttle(now + std::time::Duration::from_secs(5));
        }
        let candidates = route.candidates(None, now);
        let names: Vec<&str> = candidates
            .usable
            .iter()
            .map(|b| &*b.deployment.name)
            .collect();
        assert_eq!(names, vec!["light"]);
        let earliest = candidates.earliest.unwrap();
        assert!(earliest >= now + std::time::Duration::from_millis(4990));
    }

    fn strategy_router(strategy: &str) -> ModelRouter {
        router(&format!(
            "[models.m]\nstrategy = \"{strategy}\"\n[[deployments]]\nname = \"a\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[deployments]]\nname = \"b\"\nprovider = \"mock\"\nmodels = [\"m\"]\n[[deployments]]\nname = \"c\"\nprovider = \"mock\"\nmodels = [\"m\"]\n"
        ))
    }

    fn first(router: &ModelRouter, affinity: Option<u64>) -> String {
        let route = router.route("m").unwrap();
        route.candidates(affinity, Instant::now()).usable[0]
            .deployment
            .name
            .to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn least_outstanding_prefers_the_idlest() {
        let router = strategy_router("least_outstanding");
        let now = Instant::now();
        for backend in &router.backends()[..2] {
            backend.health.start(now);
        }
        for _ in 0..50 {
            assert_eq!(first(&router, None), "c");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_strategy_avoids_the_slow_one() {
        let router = strategy_router("latency");
        let now = Instant::now();
        for (backend, millis) in router.backends().iter().zip([500, 5, 5]) {
            let permit = backend.health.start(now).unwrap();
            backend.health.finish(
                permit,
                Some(false),
                std::time::Duration::from_millis(millis),
                now,
            );
        }
        // Power of two choices: the slow one can only win when drawn against itself.
        let slow_first = (0..300).filter(|_| first(&router, None) == "a").count();
        assert!(
            slow_first < 120,
            "the slow backend led {slow_first} of 300 orders"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rendezvous_is_stable_and_falls_through_in_order() {
        let router = strategy_router("prefix_affinity");
        let route = router.route("m").unwrap();
        let order = |key| -> Vec<String> {
            route
                .candidates(Some(key), Instant::now())
                .usable
                .iter()
                .map(|b| b.deployment.name.to_string())
                .collect()
        };
        let base = order(42);
        for _ in 0..20 {
            assert_eq!(order(42), base, "the same key always gets the same order");
        }
        let home = router
            .backends()
            .iter()
            .find(|b| *b.deployment.name == *base[0])
            .unwrap();
        home.health
            .throttle(Instant::now() + std::time::Duration::from_secs(1));
        assert_eq!(
            order(42),
            base[1..].to_vec(),
            "an unusable home falls through to the next in line"
        );
    }
}
