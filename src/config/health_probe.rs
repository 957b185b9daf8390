//! `[health_probe]`.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Probes deployments whose circuit is open, so they recover without
    /// trial calls on user traffic.
    pub enabled: bool,
    #[serde(with = "duration::serde_duration")]
    pub interval: Duration,
    #[serde(with = "duration::serde_duration")]
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}
