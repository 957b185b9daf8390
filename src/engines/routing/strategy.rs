//! Ordering the usable backends of one priority group, best first.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::Backend;
use crate::config::Strategy;

pub fn order(strategy: Strategy, group: &mut [Arc<Backend>], affinity: Option<u64>) {
    if group.len() < 2 {
        return;
    }
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
            if group[1].health.cost() < group[0].health.cost() {
                group.swap(0, 1);
            }
        }
        _ => weighted_shuffle(group),
    }
}

/// A random order in which each backend's chance of coming first is
/// proportional to its weight (sampling without replacement).
fn weighted_shuffle(group: &mut [Arc<Backend>]) {
    let mut total: u64 = group.iter().map(|b| u64::from(b.deployment.weight)).sum();
    for start in 0..group.len() {
        let mut draw = fastrand::u64(..total.max(1));
        let mut picked = group.len() - 1;
        for (index, backend) in group.iter().enumerate().skip(start) {
            let weight = u64::from(backend.deployment.weight);
            if draw < weight {
                picked = index;
                break;
            }
            draw -= weight;
        }
        group.swap(start, picked);
        total -= u64::from(group[start].deployment.weight);
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
