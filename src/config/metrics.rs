//! `[metrics]`.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Adds `sluice_key_requests_total{key, status}`: one series per key, so
    /// off by default.
    pub per_key: bool,
    /// Serve `/metrics` only on this address (and not on `[server] listen`).
    pub listen: Option<String>,
}
