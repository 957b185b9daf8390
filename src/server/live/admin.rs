//! The live core as the admin routes outside the snapshots see it
//! (`server::admin::LiveCore`).

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::Live;
use crate::config::KeyConfig;
use crate::engines::keys::RuntimeKeys;
use crate::server::admin::{AdminToken, ConfigView, LiveCore, ReloadError, Reloaded};

/// The core by a weak handle: the routes must not keep it alive.
pub struct Core(pub std::sync::Weak<Live>);

impl Core {
    fn live(&self) -> Option<Arc<Live>> {
        self.0.upgrade()
    }
}

impl LiveCore for Core {
    fn admin_token(&self) -> Option<AdminToken> {
        self.live()?.snapshot().admin.clone()
    }

    fn reload(&self) -> BoxFuture<'_, Result<Reloaded, ReloadError>> {
        async move {
            match self.live() {
                Some(live) => live.reload_file("admin").await,
                None => Err(ReloadError::Invalid("the gateway is shutting down".into())),
            }
        }
        .boxed()
    }

    fn config_view(&self) -> ConfigView {
        let Some(live) = self.live() else {
            return ConfigView {
                hash: String::new(),
                loaded_at: 0,
                runtime_keys: 0,
                redacted: serde_json::Value::Null,
            };
        };
        let snapshot = live.snapshot();
        ConfigView {
            hash: snapshot.file.view.hash.clone(),
            loaded_at: snapshot
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            runtime_keys: snapshot.config.keys.len() - snapshot.file.keys.len(),
            redacted: snapshot.file.view.redacted.clone(),
        }
    }

    fn check_keys(&self, keys: &[KeyConfig]) -> Result<(), String> {
        match self.live() {
            Some(live) => live.check_keys(keys),
            None => Err("the gateway is shutting down".to_owned()),
        }
    }

    fn apply_keys(&self, keys: Arc<RuntimeKeys>) -> BoxFuture<'_, ()> {
        async move {
            if let Some(live) = self.live() {
                let _ = live.reload_keys(|| keys.current()).await;
            }
        }
        .boxed()
    }
}
