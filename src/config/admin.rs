//! `[admin]`: the admin API and where runtime keys are kept.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for `/admin/*`; the admin API is off without one.
    pub token: Option<String>,
    /// Serve `/admin/*` only on this address (and not on `[server] listen`).
    pub listen: Option<String>,
    /// Where keys made through `/admin/keys` live: `"sqlite"` (`keys.sqlite`
    /// in `[usage] data_dir`, opened only with a `token`), `"sqlite:PATH"` or
    /// a path ending in `.sqlite`/`.db`, a `postgres://` URL (shared by a
    /// fleet), or `"none"`.
    pub keys_store: String,
    /// How often the keys store is checked for other replicas' changes
    /// (PostgreSQL also pushes them at once with NOTIFY).
    #[serde(with = "duration::serde_duration")]
    pub keys_poll_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: None,
            listen: None,
            keys_store: "sqlite".to_owned(),
            keys_poll_interval: Duration::from_secs(2),
        }
    }
}
