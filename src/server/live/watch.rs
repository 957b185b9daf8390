//! Reload triggers that run for the process's life: SIGHUP, and the config
//! file's content changing (`[server] watch_config`, which a reload can turn
//! on or off). The file is compared by
//! content hash, not modification time, so an editor's save, an atomic
//! rename and a Kubernetes ConfigMap's symlink swap are all seen, and a file
//! touched without a change is not a reload. A save caught half-written fails
//! validation and is retried when the content changes again.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Live;

/// How often the watcher reads the config file.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The largest config file the watcher reads.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Takes over SIGHUP at once (its default action ends the process), so a
/// hang-up during a slow start-up is a reload, not an exit.
pub fn hangups(live: &Arc<Live>) {
    if live.path.is_none() {
        return;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
            return;
        };
        let (weak, stop) = (Arc::downgrade(live), live.registries.tasks.clone());
        live.registries.tasks.spawn(async move {
            loop {
                tokio::select! {
                    hangup = hangups.recv() => if hangup.is_none() { return },
                    () = stop.stopping() => return,
                }
                let Some(live) = weak.upgrade() else { return };
                let _ = live.reload_file("sighup").await;
            }
        });
    }
}

/// Follows the config file's content; `[server] watch_config` of the
/// snapshot in force decides, at each look, whether a change is applied.
pub fn file(live: &Arc<Live>) {
    let Some(path) = live.path.clone() else {
        return;
    };
    let weak = Arc::downgrade(live);
    live.registries
        .tasks
        .spawn_until_stopped(on_change(weak, path));
}

async fn on_change(live: Weak<Live>, path: PathBuf) {
    let mut last = digest(&path).await;
    // The running config was read at start-up, before this first look: an
    // edit made in between would otherwise never be reloaded.
    match live.upgrade() {
        Some(live) if live.watches_file() => live.catch_up().await,
        Some(_) => {}
        None => return,
    }
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = digest(&path).await;
        if now.is_none() || now == last {
            // A file briefly missing (replaced by rename) is not a change.
            continue;
        }
        let Some(live) = live.upgrade() else { return };
        if !live.watches_file() {
            // Seen, not applied: turning the watcher on later does not
            // replay edits made while it was off.
            last = now;
            continue;
        }
        last = now;
        let _ = live.reload_file("file").await;
    }
}

/// The file's content hash; `None` when it cannot be read now.
async fn digest(path: &PathBuf) -> Option<[u8; 32]> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    if metadata.len() > MAX_CONFIG_BYTES {
        return None;
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    use sha2::Digest;
    Some(sha2::Sha256::digest(&bytes).into())
}
