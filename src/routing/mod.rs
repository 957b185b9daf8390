//! Model name -> the deployments that serve it, grouped by priority.
//! Built once at start-up; lookups borrow the client's model string.

use std::collections::HashMap;
use std::sync::Arc;

use crate::upstream::Deployment;

/// Set by a layer that already chose the deployment (the limiter, when
/// deployments have quotas); the dispatcher uses it instead of picking.
#[derive(Clone)]
pub struct ChosenDeployment(pub Arc<Deployment>);

/// Deployments sharing one priority number; picked among by weight.
struct PriorityGroup {
    priority: i32,
    members: Vec<Arc<Deployment>>,
    /// Running sum of weights, for one random draw per pick.
    cumulative_weights: Vec<u64>,
}

impl PriorityGroup {
    fn pick(&self) -> &Arc<Deployment> {
        let total = self.cumulative_weights.last().copied().unwrap_or(0);
        let draw = fastrand::u64(..total.max(1));
        let index = self.cumulative_weights.partition_point(|&sum| sum <= draw);
        &self.members[index.min(self.members.len() - 1)]
    }
}

/// All deployments serving one client-visible model, best group first.
pub struct ModelRoute {
    pub name: Arc<str>,
    groups: Vec<PriorityGroup>,
}

impl ModelRoute {
    /// The deployment for the next call: lowest priority number, then by weight.
    pub fn pick(&self) -> Option<&Arc<Deployment>> {
        self.groups.first().map(PriorityGroup::pick)
    }

    /// Every deployment, best first: priority groups in order, each group in
    /// a random order drawn by weight.
    pub fn preference_order(&self) -> Vec<Arc<Deployment>> {
        let mut order = Vec::with_capacity(self.groups.iter().map(|g| g.members.len()).sum());
        for group in &self.groups {
            let mut pool: Vec<&Arc<Deployment>> = group.members.iter().collect();
            let mut total: u64 = pool.iter().map(|d| u64::from(d.weight)).sum();
            while !pool.is_empty() {
                let mut draw = fastrand::u64(..total.max(1));
                let index = pool
                    .iter()
                    .position(|d| {
                        let weight = u64::from(d.weight);
                        if draw < weight {
                            true
                        } else {
                            draw -= weight;
                            false
                        }
                    })
                    .unwrap_or(pool.len() - 1);
                let picked = pool.swap_remove(index);
                total -= u64::from(picked.weight);
                order.push(picked.clone());
            }
        }
        order
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.groups.iter().flat_map(|g| g.members.iter())
    }

    pub fn priorities(&self) -> impl Iterator<Item = i32> + '_ {
        self.groups.iter().map(|g| g.priority)
    }
}

pub struct ModelRouter {
    routes: HashMap<String, Arc<ModelRoute>>,
    /// Sorted names, for `/v1/models`.
    names: Vec<Arc<str>>,
}

impl ModelRouter {
    /// `served` pairs each deployment with the client model names it serves.
    pub fn new(served: &[(Arc<Deployment>, Vec<String>)]) -> Self {
        let mut by_model: HashMap<&str, Vec<&Arc<Deployment>>> = HashMap::new();
        for (deployment, models) in served {
            for model in models {
                by_model.entry(model).or_default().push(deployment);
            }
        }
        let mut routes = HashMap::new();
        for (model, mut deployments) in by_model {
            deployments.sort_by_key(|d| d.priority);
            let mut groups: Vec<PriorityGroup> = Vec::new();
            for deployment in deployments {
                match groups.last_mut() {
                    Some(group) if group.priority == deployment.priority => {
                        push_member(group, deployment)
                    }
                    _ => {
                        let mut group = PriorityGroup {
                            priority: deployment.priority,
                            members: Vec::new(),
                            cumulative_weights: Vec::new(),
                        };
                        push_member(&mut group, deployment);
                        groups.push(group);
                    }
                }
            }
            let name: Arc<str> = Arc::from(model);
            routes.insert(model.to_owned(), Arc::new(ModelRoute { name, groups }));
        }
        let mut names: Vec<Arc<str>> = routes.values().map(|r| r.name.clone()).collect();
        names.sort();
        Self { routes, names }
    }

    pub fn route(&self, model: &str) -> Option<&Arc<ModelRoute>> {
        self.routes.get(model)
    }

    pub fn model_names(&self) -> &[Arc<str>] {
        &self.names
    }
}

fn push_member(group: &mut PriorityGroup, deployment: &Arc<Deployment>) {
    let previous = group.cumulative_weights.last().copied().unwrap_or(0);
    group
        .cumulative_weights
        .push(previous + u64::from(deployment.weight));
    group.members.push(deployment.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeploymentConfig, MockConfig, Provider};

    fn deployment(name: &str, priority: i32, weight: u32) -> (Arc<Deployment>, Vec<String>) {
        let config = DeploymentConfig {
            name: name.into(),
            provider: Provider::Mock,
            base_url: String::new(),
            api_key: None,
            models: vec!["m".into()],
            model_map: Default::default(),
            priority,
            weight,
            timeout: std::time::Duration::from_secs(1),
            api_version: None,
            mock: MockConfig::default(),
            rpm: None,
            tpm: None,
        };
        (
            Arc::new(Deployment::from_config(&config).unwrap()),
            vec!["m".into()],
        )
    }

    #[test]
    fn lowest_priority_group_wins_and_weights_split_traffic() {
        let router = ModelRouter::new(&[
            deployment("backup", 5, 1),
            deployment("heavy", 0, 3),
            deployment("light", 0, 1),
        ]);
        let route = router.route("m").unwrap();
        assert_eq!(route.priorities().collect::<Vec<_>>(), vec![0, 5]);
        let mut heavy = 0;
        for _ in 0..20_000 {
            let picked = route.pick().unwrap();
            assert_ne!(&*picked.name, "backup");
            heavy += usize::from(&*picked.name == "heavy");
        }
        let share = heavy as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "heavy share {share}");
        assert!(router.route("other").is_none());
    }
}
