//! Deployment state that outlives a config snapshot: health (throttling,
//! headroom, breaker, latency) and `max_concurrency` slots, by deployment
//! name. A reload that leaves a deployment's endpoint alone keeps its state
//! even when its weight, priority, models or limits change; one that points
//! the name elsewhere (provider, URL, API version) or changes the breaker
//! settings starts its health fresh. Its slots are always kept (resized), so
//! calls in flight keep counting against `max_concurrency`, and so is an
//! adaptive limit (rebounded), so a reload does not restart its learning.

use std::sync::Arc;

use dashmap::DashMap;

use super::{AdaptiveLimit, Backend, Health, Hedge, RetryBudget};
use crate::config::{Config, DeploymentConfig, HedgeSettings};
use crate::engines::queue::Scheduler;
use crate::upstream::Deployment;

struct Entry {
    /// What the state is about: the endpoint and the breaker settings.
    fingerprint: String,
    health: Arc<Health>,
    slots: Option<Arc<Scheduler>>,
    adaptive: Option<Arc<AdaptiveLimit>>,
}

#[derive(Default)]
pub struct DeploymentStates {
    entries: DashMap<Arc<str>, Entry>,
    /// Each model's retry budget, by model name: a reload that keeps the
    /// model and the budget's settings keeps what it has saved or spent.
    budgets: DashMap<String, Arc<RetryBudget>>,
    /// Each hedged model's recent starts and hedge budget, kept the same way.
    hedges: DashMap<String, Arc<Hedge>>,
}

impl DeploymentStates {
    /// `deployment` as routing sees it, with its state carried over when the
    /// same deployment was configured before.
    pub fn backend(
        &self,
        deployment: Arc<Deployment>,
        settings: &DeploymentConfig,
        config: &Config,
    ) -> Arc<Backend> {
        let fingerprint = format!(
            "{:?}\n{}\n{:?}\n{:?}",
            settings.provider, settings.base_url, settings.api_version, config.circuit_breaker
        );
        let queue = Arc::new(config.queue.clone());
        let mut entry = self
            .entries
            .entry(deployment.name.clone())
            .or_insert_with(|| Entry {
                fingerprint: fingerprint.clone(),
                health: Arc::new(Health::new(deployment.name.clone(), config.circuit_breaker)),
                slots: None,
                adaptive: None,
            });
        if entry.fingerprint != fingerprint {
            // The slots stay: permits held by calls in flight keep counting.
            entry.fingerprint = fingerprint;
            entry.health = Arc::new(Health::new(deployment.name.clone(), config.circuit_breaker));
        }
        let adaptive = settings.adaptive_bounds();
        // An adaptive limit keeps its learnt capacity; a fixed one is set.
        let capacity = match (adaptive, &entry.adaptive) {
            (Some(_), Some(limit)) => Some(limit.limit()),
            (Some((min, _)), None) => Some(min),
            (None, _) => settings.max_concurrency,
        };
        entry.slots = match (capacity, entry.slots.take()) {
            (Some(capacity), Some(slots)) => {
                slots.reshape(capacity, queue);
                Some(slots)
            }
            (Some(capacity), None) => Some(Scheduler::new(capacity, queue)),
            (None, _) => None,
        };
        entry.adaptive = match (adaptive, entry.adaptive.take(), &entry.slots) {
            (Some((min, max)), Some(limit), _) => {
                limit.rebound(min, max);
                Some(limit)
            }
            (Some((min, max)), None, Some(slots)) => {
                Some(AdaptiveLimit::new(min, max, slots.clone()))
            }
            _ => None,
        };
        Arc::new(Backend {
            health: entry.health.clone(),
            slots: entry.slots.clone(),
            adaptive: entry.adaptive.clone(),
            deployment,
        })
    }

    /// Forgets deployments no longer configured.
    pub fn retain(&self, config: &Config) {
        self.entries.retain(|name, _| {
            config
                .deployments
                .iter()
                .any(|deployment| *deployment.name == **name)
        });
        let served = |model: &String| {
            config
                .deployments
                .iter()
                .any(|deployment| deployment.models.iter().any(|served| served == model))
        };
        self.budgets.retain(|model, _| served(model));
        self.hedges.retain(|model, _| {
            served(model) && config.models.get(model).is_some_and(|s| s.hedge.is_some())
        });
    }

    /// `model`'s retry budget, the one it had when `config`'s settings for
    /// it are unchanged.
    pub fn retry_budget(&self, model: &str, config: &Config) -> Arc<RetryBudget> {
        let (ratio, floor) = (config.retry.budget_ratio, config.retry.budget_min_per_sec);
        let mut budget = self
            .budgets
            .entry(model.to_owned())
            .or_insert_with(|| Arc::new(RetryBudget::new(ratio, floor)));
        if !budget.has_settings(ratio, floor) {
            *budget = Arc::new(RetryBudget::new(ratio, floor));
        }
        budget.clone()
    }

    /// `model`'s hedging state, the one it had when its settings are unchanged.
    pub fn hedge(&self, model: &str, settings: HedgeSettings) -> Arc<Hedge> {
        let mut hedge = self
            .hedges
            .entry(model.to_owned())
            .or_insert_with(|| Arc::new(Hedge::new(settings)));
        if !hedge.has_settings(&settings) {
            *hedge = Arc::new(Hedge::new(settings));
        }
        hedge.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;

    fn config(ratio: f64) -> Config {
        let toml = format!(
            "[retry]\nbudget_ratio = {ratio}\n[[deployments]]\nname = \"m\"\nprovider = \"mock\"\nmodels = [\"gpt-4o\"]\n"
        );
        load_from_str(&toml, "test", &Default::default()).unwrap()
    }

    #[test]
    fn a_reload_keeps_a_models_hedging_state_unless_its_settings_change() {
        let states = DeploymentStates::default();
        let settings = |percentile| HedgeSettings {
            percentile,
            budget_percent: 5.0,
        };
        let first = states.hedge("gpt-4o", settings(95.0));
        assert!(Arc::ptr_eq(&first, &states.hedge("gpt-4o", settings(95.0))));
        let changed = states.hedge("gpt-4o", settings(90.0));
        assert!(!Arc::ptr_eq(&first, &changed));
        // A reload that drops the model's hedge table forgets its state.
        states.retain(&config(0.2));
        assert!(!Arc::ptr_eq(
            &changed,
            &states.hedge("gpt-4o", settings(90.0))
        ));
    }

    #[test]
    fn a_reload_keeps_a_models_retry_budget_unless_its_settings_change() {
        let states = DeploymentStates::default();
        let first = states.retry_budget("gpt-4o", &config(0.2));
        assert!(Arc::ptr_eq(
            &first,
            &states.retry_budget("gpt-4o", &config(0.2))
        ));
        let changed = states.retry_budget("gpt-4o", &config(0.5));
        assert!(!Arc::ptr_eq(&first, &changed));
        states.retain(&config(0.5));
        assert!(Arc::ptr_eq(
            &changed,
            &states.retry_budget("gpt-4o", &config(0.5))
        ));
        let gone = config(0.5);
        let mut without = gone.clone();
        without.deployments[0].models = vec!["other".into()];
        states.retain(&without);
        assert!(!Arc::ptr_eq(
            &changed,
            &states.retry_budget("gpt-4o", &gone)
        ));
    }
}
