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

use super::{AdaptiveLimit, Backend, Health};
use crate::config::{Config, DeploymentConfig};
use crate::queue::Scheduler;
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
    }
}
