//! Runtime keys in the live core: the store is opened at start-up, its set
//! is merged into every snapshot, and every change (a write here, another
//! replica's write seen by NOTIFY or polling) builds the next snapshot. A
//! write through this replica's admin API is in force here before the API
//! answers; other replicas follow within their notification or poll delay.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;

use super::Live;
use crate::config::{Config, KeyConfig, KeysStoreSpec};
use crate::keys::{KeysAdmin, KeysOptions, RuntimeKeys};

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

/// `/admin/keys` and `/admin/keys/{id}`: the store's handlers, validated
/// against the config in force, and applied here before they answer.
pub fn routes(live: &Arc<Live>, keys: Arc<RuntimeKeys>) -> Router {
    let validating = Arc::downgrade(live);
    let admin = KeysAdmin {
        keys: keys.clone(),
        validate: Arc::new(move |candidate: &[KeyConfig]| match validating.upgrade() {
            Some(live) => live.check_keys(candidate),
            None => Err("the gateway is shutting down".to_owned()),
        }),
    };
    admin
        .router()
        .layer(from_fn_with_state((live.clone(), keys), apply_now))
}

async fn apply_now(
    State((live, keys)): State<(Arc<Live>, Arc<RuntimeKeys>)>,
    request: Request,
    next: Next,
) -> Response {
    let writes = request.method() != http::Method::GET;
    let response = next.run(request).await;
    if writes && response.status().is_success() {
        let _ = live.reload_keys(|| keys.current()).await;
    }
    response
}
