//! Runtime keys in the live core: the store is opened at start-up, its set
//! is merged into every snapshot, and every change (a write here, another
//! replica's write seen by NOTIFY or polling) builds the next snapshot. A
//! write through this replica's admin API is in force here before the API
//! answers; other replicas follow within their notification or poll delay.

use std::sync::Arc;

use super::Live;
use crate::config::{Config, KeysStoreSpec};
use crate::engines::keys::{KeysOptions, RuntimeKeys};

/// Opens the store `[admin] keys_store` names, if any.
pub async fn open(config: &Config, live: &Live) -> Result<Option<Arc<RuntimeKeys>>, String> {
    let Some(spec) = KeysStoreSpec::from_config(config)? else {
        return Ok(None);
    };
    let options = KeysOptions::from_config(&config.admin);
    let keys = RuntimeKeys::open(&spec, options, &live.registries.tasks)
        .await
        .map_err(|e| format!("admin.keys_store: {e}"))?;
    Ok(Some(Arc::new(keys)))
}

/// Puts the store's set in force now, then follows its changes.
/// A key that does not fit the file is left out (logged), never the set,
/// so start-up does not fail on runtime keys.
pub async fn follow(live: &Arc<Live>, keys: &Arc<RuntimeKeys>) {
    // Subscribed first: a change while the set is being applied is seen.
    let mut changes = keys.changes();
    let _ = live.reload_keys(|| keys.current()).await;
    let tasks = &live.registries.tasks;
    let watching = keys.clone();
    // Cancelled mid-call too: a store that hangs at shutdown does not hold
    // the drain.
    let stop = tasks.stop_token();
    tasks.spawn_until_stopped(async move { watching.watch(stop).await });
    let (weak, keys, stop) = (Arc::downgrade(live), keys.clone(), tasks.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = stop.stopping() => return,
            }
            let Some(live) = weak.upgrade() else { return };
            let _ = live.reload_keys(|| keys.current()).await;
        }
    });
}
