//! Ordering the usable backends of one priority group, best first.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tokio::time::Instant;

use super::Backend;
use crate::config::Strategy;

/// How the weights of one ordering are read: as configured, or scaled by
/// each deployment's reported headroom at `now`.
#[derive(Clone, Copy)]
pub struct Weights {
    pub headroom: bool,
    pub now: Instant,
}

impl Weights {
    fn of(self, backend: &Backend) -> f64 {
        let weight = f64::from(backend.deployment.weight);
        match self.headroom {
            true => weight * backend.health.headroom(self.now),
            false => weight,
        }
    }
}

pub fn order(
    strategy: Strategy,
    group: &mut [Arc<Backend>],
    affinity: Option<u64>,
    weights: Weights,
) {
    if group.len() < 2 {
        return;
    }
    let weighted_shuffle = |group: &mut [Arc<Backend>]| weighted_shuffle(group, weights);
    match (strategy, affinity) {
        (Strategy::PrefixAffinity, Some(key)) => rendezvous(group, key),
        (Strategy::LeastOutstanding, _) => {
            weighted_shuffle(group);
            // Stable: equal loads keep their weighted-random order.
            group.sort_by_key(|b| b.health.in_flight());
        }
        (Strategy::Latency, _) => {
            weighted_shuffle(group);
            // Power of two choices: the better of two random picks goes first.
            if group[1].health.cost(weights.now) < group[0].health.cost(weights.now) {
                group.swap(0, 1);
            }
        }
        _ => weighted_shuffle(group),
    }
}

/// A random order in which each backend's chance of coming first is
/// proportional to its weight (sampling without replacement). Weights are
/// read as they are needed: a group is a handful of deployments, and the
/// order needs no buffer.
fn weighted_shuffle(group: &mut [Arc<Backend>], weights: Weights) {
    for start in 0..group.len() - 1 {
        let total: f64 = group[start..].iter().map(|b| weights.of(b)).sum();
        let mut draw = fastrand::f64() * total;
        let mut picked = group.len() - 1;
        for (index, backend) in group.iter().enumerate().skip(start) {
            let weight = weights.of(backend);
            if draw < weight {
                picked = index;
                break;
            }
            draw -= weight;
        }
        group.swap(start, picked);
    }
}

/// Weighted rendezvous (highest random weight) hashing: every key gets a
/// stable order of backends, so the same prefix keeps landing on the same
/// upstream, and falls through to the same next one when it is unusable.
fn rendezvous(group: &mut [Arc<Backend>], key: u64) {
    let score = |backend: &Arc<Backend>| {
        let mut hasher = DefaultHasher::new();
        (key, &*backend.deployment.name).hash(&mut hasher);
        // Map the hash into (0, 1) and weight it: -w / ln(u).
        let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        -f64::from(backend.deployment.weight) / unit.max(f64::MIN_POSITIVE).ln()
    };
    group.sort_by(|a, b| score(b).total_cmp(&score(a)));
}
