//! Replacing the snapshot: read and validate the whole new config (the file's
//! and the runtime keys merged into it), build the next snapshot beside the
//! running one, then swap in one atomic store. Any failure leaves the running
//! snapshot in force, with the same path-aware message `sluice check` gives.

use std::sync::Arc;
use std::time::Duration;

use super::Live;
use super::registries::restart_only_changes;
use super::snapshot::Snapshot;
use crate::config::{self, Config, KeyCheck, KeyConfig};
use crate::engines::keys::RuntimeKey;
use crate::server::admin::{ReloadError, Reloaded};

/// The longest a reload may take to read the file.
const READ_DEADLINE: Duration = Duration::from_secs(10);

impl Live {
    /// Reloads the config file (SIGHUP, `POST /admin/reload`, the watcher).
    pub async fn reload_file(
        self: &Arc<Self>,
        trigger: &'static str,
    ) -> Result<Reloaded, ReloadError> {
        let result = self.read_and_swap().await;
        self.count(trigger, &result);
        result
    }

    /// Reloads the file if it no longer says what is in force; silent (no
    /// log, no count) when it does.
    pub(super) async fn catch_up(self: &Arc<Self>) {
        let result = self.read_and_swap().await;
        if !matches!(result, Ok(Reloaded { changed: false, .. })) {
            self.count("file", &result);
        }
    }

    /// Applies the runtime keys' set to the file's config in force. The set
    /// is read once the reload's turn has come, so two applications never
    /// land out of order (an older set, a revoked key in it, last); a set
    /// already in force is not applied again.
    pub async fn reload_keys(
        self: &Arc<Self>,
        keys: impl FnOnce() -> Arc<[RuntimeKey]>,
    ) -> Result<Reloaded, ReloadError> {
        let mut applied = self.reloading.lock().await;
        let keys = keys();
        let file = self.snapshot().file.clone();
        if applied
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &keys))
        {
            return Ok(Reloaded {
                hash: file.view.hash.clone(),
                changed: false,
                restart_required: Vec::new(),
            });
        }
        let configs = keys.iter().map(RuntimeKey::to_config).collect();
        let previous = self.runtime_keys.swap(Arc::new(configs));
        let result = self.swap_to(file, true).await;
        match &result {
            Ok(_) => *applied = Some(keys),
            Err(_) => self.runtime_keys.store(previous),
        }
        self.count("keys", &result);
        result
    }

    /// Whether the last of `keys` (the candidate; the others are the
    /// runtime set around it) fits the file's config in force and the keys
    /// before it: the admin API checks before it stores.
    pub fn check_keys(&self, keys: &[KeyConfig]) -> Result<(), String> {
        let Some((candidate, others)) = keys.split_last() else {
            return Ok(());
        };
        let file = self.snapshot().file.clone();
        let mut check = KeyCheck::after_file(&file);
        for key in others {
            // A stale key that no longer fits is not in force; it does not
            // block another key's change.
            let _ = check.admit("", key);
        }
        let problems = check.admit("key", candidate);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    async fn read_and_swap(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let path = self.path.clone().ok_or(ReloadError::NoFile)?;
        let _serial = self.reloading.lock().await;
        let read = self
            .registries
            .tasks
            .spawn_blocking(move || config::load_from_path(&path));
        let file = tokio::time::timeout(READ_DEADLINE, read)
            .await
            .map_err(|_| ReloadError::Read)?
            .map_err(|_| ReloadError::Read)??;
        let changed = file.view.hash != self.snapshot().file.view.hash;
        self.swap_to(Arc::new(file), changed).await
    }

    /// Builds the snapshot of `file` with the runtime keys (on the blocking
    /// pool: with many keys it takes a while) and swaps it in.
    async fn swap_to(
        self: &Arc<Self>,
        file: Arc<Config>,
        changed: bool,
    ) -> Result<Reloaded, ReloadError> {
        let running = self.snapshot();
        let restart_required = restart_only_changes(&running.file, &file);
        if changed {
            let (live, next_file) = (self.clone(), file.clone());
            let next = self
                .registries
                .tasks
                .spawn_blocking(move || live.build(next_file))
                .await
                .map_err(|_| ReloadError::Invalid("building the new config failed".into()))??;
            let replaced = self.current.swap(Arc::new(next));
            replaced.loops.stop();
            self.publish(Some(&replaced.file.view.hash));
        }
        if !restart_required.is_empty() {
            tracing::warn!(
                settings = ?restart_required,
                "config reloaded; these settings take effect at the next restart"
            );
        }
        Ok(Reloaded {
            hash: file.view.hash.clone(),
            changed,
            restart_required,
        })
    }

    fn build(&self, file: Arc<Config>) -> Result<Snapshot, ReloadError> {
        let config = self.merged(&file);
        Snapshot::build(
            file,
            Arc::new(config),
            &self.registries,
            self.pipeline.clone(),
            self.apart,
        )
        .map_err(ReloadError::Invalid)
    }

    /// The file's config with the runtime keys that fit it appended (one
    /// that does not, e.g. its name now taken by a file key or its tier
    /// gone, is left out and logged, not the whole set), and the `[redis]`
    /// the gateway started with: its connection is restart-only, so its key
    /// prefix and failure policy are too.
    fn merged(&self, file: &Config) -> Config {
        let mut config = file.clone();
        config.redis = self.registries.redis_config.clone();
        let mut check = KeyCheck::after_file(file);
        for key in self.runtime_keys.load().iter() {
            let problems = check.admit("key", key);
            if problems.is_empty() {
                config.keys.push(key.clone());
            } else {
                tracing::warn!(
                    id = %crate::util::text::clip(key.id()),
                    problems = %problems.join("; "),
                    "runtime key not in force: it does not fit the config file"
                );
            }
        }
        config
    }

    fn count(&self, trigger: &'static str, result: &Result<Reloaded, ReloadError>) {
        let label = match result {
            Ok(reloaded) if reloaded.changed => {
                tracing::info!(trigger, hash = %reloaded.hash, "config reloaded");
                "ok"
            }
            Ok(_) => {
                tracing::info!(trigger, "config unchanged; nothing to reload");
                "unchanged"
            }
            Err(error) => {
                tracing::error!(trigger, %error, "config reload rejected; the running config stays in force");
                "invalid"
            }
        };
        self.registries
            .metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
    }

    /// Points `sluice_config_info` at the snapshot in force.
    pub(super) fn publish(&self, replaced: Option<&str>) {
        let info = &self.registries.metrics.config_info;
        if let Some(hash) = replaced {
            let _ = info.remove_label_values(&[hash]);
        }
        info.with_label_values(&[&self.snapshot().file.view.hash])
            .set(1);
    }
}
