//! `[pricing."MODEL"]`, `[org_budgets.NAME]`, `[alerts]`: prices, spend budgets and alerts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// USD spend limits over UTC calendar periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub budget_daily_usd: Option<f64>,
    #[serde(default)]
    pub budget_monthly_usd: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Budget shares that raise an alert, once per period each.
    pub thresholds: Vec<f64>,
    /// Where alert events are POSTed as JSON (off the request path).
    pub webhook_url: Option<String>,
    #[serde(with = "duration::serde_duration")]
    pub webhook_timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            thresholds: vec![0.5, 0.75, 0.9, 1.0],
            webhook_url: None,
            webhook_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_1m: f64,
    /// Prompt tokens served from the provider's prompt cache; the input price when absent.
    #[serde(default)]
    pub cached_input_per_1m: Option<f64>,
    pub output_per_1m: f64,
}
