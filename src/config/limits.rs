//! `[limits]`: burst and the default output estimate.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Extra bucket capacity as a fraction of each per-minute limit: with
    /// `rpm = 60` and `burst = 0.5`, 90 requests may arrive at once.
    pub burst: f64,
    /// Completion tokens charged up front when a request sets no max tokens.
    pub default_max_tokens: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            burst: 0.0,
            default_max_tokens: 512,
        }
    }
}
