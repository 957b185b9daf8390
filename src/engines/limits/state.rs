//! Limiter state that outlives a config snapshot. A reload builds a new
//! bucket table from the new config; each bucket still configured (same
//! scope, name and kind) takes its level from here, so an unchanged key's
//! RPM count survives the swap, and a changed limit applies to the level
//! already used. The in-memory engine's clock lives here for the same reason:
//! levels are times on it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use dashmap::DashMap;
use tokio::time::Instant;

use super::subject::{Kind, Scope};

type CellKey = (Scope, Arc<str>, Kind);

pub struct LimitState {
    /// The in-memory engine's time origin.
    pub(super) epoch: Instant,
    /// Each bucket's TAT (f64 bits), by subject.
    cells: DashMap<CellKey, Arc<AtomicU64>>,
}

impl Default for LimitState {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            cells: DashMap::new(),
        }
    }
}

impl LimitState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of one bucket: the existing one, or a fresh full bucket.
    pub(super) fn cell(&self, scope: Scope, name: &str, kind: Kind) -> Arc<AtomicU64> {
        self.cells
            .entry((scope, Arc::from(name), kind))
            .or_insert_with(|| Arc::new(AtomicU64::new(0f64.to_bits())))
            .clone()
    }

    /// Forgets the subjects `configured` no longer names (a removed key
    /// that comes back starts full). Calls still running on an older
    /// snapshot keep theirs.
    pub(super) fn retain(&self, configured: impl Fn(Scope, &str, Kind) -> bool) {
        self.cells
            .retain(|(scope, name, kind), _| configured(*scope, name, *kind));
    }
}
