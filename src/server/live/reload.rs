//! Replacing the snapshot: read and validate the whole new config (the file's
//! and the runtime keys merged into it), build the next snapshot beside the
//! running one, then swap in one atomic store. Any failure leaves the running
//! snapshot in force, with the same path-aware message `sluice check` gives.

use std::sync::Arc;
use std::time::Duration;

use super::Live;
use super::registries::restart_only_changes;
use super::snapshot::Snapshot;
use crate::config::{self, Config, ConfigError, KeyConfig};

/// The longest a reload may take to read the file.
const READ_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload: the gateway was started from a config in memory")]
    NoFile,
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The merged config (file and runtime keys) fails validation.
    #[error("{0}")]
    Invalid(String),
    #[error("reading the config file timed out or failed")]
    Read,
}

/// What a successful reload did.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    /// The hash of the file's config now in force.
    pub hash: String,
    /// `false` when the config was the same as the running one.
    pub changed: bool,
    /// Settings that changed but take effect at the next restart.
    pub restart_required: Vec<&'static str>,
}

impl Live {
    /// Reloads the config file (SIGHUP, `POST /admin/reload`, the watcher).
    pub async fn reload_file(&self, trigger: &'static str) -> Result<Reloaded, ReloadError> {
        let result = self.read_and_swap().await;
        self.count(trigger, &result);
        result
    }

    /// Reloads the file if it no longer says what is in force; silent (no
    /// log, no count) when it does.
    pub(super) async fn catch_up(&self) {
        let result = self.read_and_swap().await;
        if !matches!(result, Ok(Reloaded { changed: false, .. })) {
            self.count("file", &result);
        }
    }

    /// Applies the runtime keys' set to the file's config in force. The set
    /// is read once the reload's turn has come, so two applications never
    /// land out of order (an older set, a revoked key in it, last).
    pub async fn reload_keys(
        &self,
        keys: impl FnOnce() -> Vec<KeyConfig>,
    ) -> Result<Reloaded, ReloadError> {
        let _serial = self.reloading.lock().await;
        let previous = self.runtime_keys.swap(Arc::new(keys()));
        let file = self.snapshot().file.clone();
        let result = self.swap_to(file, true);
        if result.is_err() {
            self.runtime_keys.store(previous);
        }
        self.count("keys", &result);
        result
    }

    /// Whether `keys` as the runtime set would make a valid config with the
    /// file's config in force (the admin API checks before it persists).
    pub fn check_keys(&self, keys: &[KeyConfig]) -> Result<(), String> {
        merged(&self.snapshot().file, keys).map(|_| ())
    }

    async fn read_and_swap(&self) -> Result<Reloaded, ReloadError> {
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
        self.swap_to(Arc::new(file), changed)
    }

    /// Builds the snapshot of `file` with the runtime keys and swaps it in.
    fn swap_to(&self, file: Arc<Config>, changed: bool) -> Result<Reloaded, ReloadError> {
        let running = self.snapshot();
        let restart_required = restart_only_changes(&running.file, &file);
        if changed {
            let config = merged(&file, &self.runtime_keys.load()).map_err(ReloadError::Invalid)?;
            let next = Snapshot::build(
                file.clone(),
                Arc::new(config),
                &self.registries,
                self.pipeline.clone(),
                self.apart,
            )
            .map_err(ReloadError::Invalid)?;
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

/// The file's config with the runtime keys appended, validated as a whole.
fn merged(file: &Config, runtime: &[KeyConfig]) -> Result<Config, String> {
    let mut config = file.clone();
    if runtime.is_empty() {
        return Ok(config);
    }
    config.keys.extend(runtime.iter().cloned());
    config::validate(&config)?;
    Ok(config)
}
