//! Reload triggers that run for the process's life: SIGHUP, and the config
//! file's content changing (`[server] watch_config`). The file is compared by
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

pub fn start(live: &Arc<Live>) {
    let tasks = &live.registries.tasks;
    let weak = Arc::downgrade(live);
    let stop = tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = on_sighup(weak) => {}
            () = stop.stopping() => {}
        }
    });
    if let (Some(path), true) = (&live.path, live.snapshot().file.server.watch_config) {
        let (weak, path, stop) = (Arc::downgrade(live), path.clone(), tasks.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = on_change(weak, path) => {}
                () = stop.stopping() => {}
            }
        });
    }
}

#[cfg(unix)]
async fn on_sighup(live: Weak<Live>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /admin/reload");
        return;
    };
    while hangups.recv().await.is_some() {
        let Some(live) = live.upgrade() else { return };
        let _ = live.reload_file("sighup").await;
    }
}

#[cfg(not(unix))]
async fn on_sighup(_live: Weak<Live>) {}

async fn on_change(live: Weak<Live>, path: PathBuf) {
    let mut last = digest(&path).await;
    // The running config was read at start-up, before this first look: an
    // edit made in between would otherwise never be reloaded.
    match live.upgrade() {
        Some(live) => live.catch_up().await,
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
        last = now;
        let Some(live) = live.upgrade() else { return };
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
