//! Cache state that outlives a config snapshot: the entries, the calls in
//! flight and the semantic index. A reload that keeps the store's settings
//! keeps every entry; one that changes them (memory to Redis, a new size or
//! key prefix, another semantic store) starts that part afresh.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::flight::Flight;
use super::key::CacheKey;
use super::semantic::Index;
use super::store::Store;

/// A part kept while its settings (the fingerprint) stay the same.
struct Kept<T> {
    fingerprint: String,
    value: T,
}

#[derive(Default)]
pub struct CacheState {
    store: Mutex<Option<Kept<Store>>>,
    index: Mutex<Option<Kept<Arc<Index>>>>,
    /// Calls in flight, by key, for coalescing: shared by snapshots, so a
    /// request on the new one joins a call the old one started.
    pub(super) flights: Arc<DashMap<CacheKey, Arc<Flight>>>,
}

impl CacheState {
    pub(super) fn store(&self, fingerprint: String, make: impl FnOnce() -> Store) -> Store {
        keep(&self.store, fingerprint, make)
    }

    pub(super) fn index(&self, fingerprint: String, make: impl FnOnce() -> Index) -> Arc<Index> {
        keep(&self.index, fingerprint, || Arc::new(make()))
    }
}

/// The kept value when its fingerprint matches, else a new one (kept).
/// Reloads are rare and serial: the lock is never contended on requests.
fn keep<T: Clone>(
    slot: &Mutex<Option<Kept<T>>>,
    fingerprint: String,
    make: impl FnOnce() -> T,
) -> T {
    let Ok(mut slot) = slot.lock() else {
        return make();
    };
    match &*slot {
        Some(kept) if kept.fingerprint == fingerprint => kept.value.clone(),
        _ => {
            let value = make();
            *slot = Some(Kept {
                fingerprint,
                value: value.clone(),
            });
            value
        }
    }
}
