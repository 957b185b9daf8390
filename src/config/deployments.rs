//! `[[deployments]]`: the upstreams, their provider, quota, concurrency and batch mode.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::{default_weight, duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Openai,
    Azure,
    /// Anthropic's Messages API: chat completions translated both ways.
    Anthropic,
    /// In-process simulated OpenAI upstream, for trying Sluice without a provider account.
    Mock,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Mock => "mock",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    pub name: String,
    pub provider: Provider,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    pub models: Vec<String>,
    /// Client model name -> upstream model name (or Azure deployment name).
    #[serde(default)]
    pub model_map: HashMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Deadline for the upstream's first byte, and for each gap between streamed chunks.
    #[serde(default = "default_timeout", with = "duration::serde_duration")]
    pub timeout: Duration,
    /// Azure only: a dated version such as `2024-10-21`, or `v1` for the v1 API.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub mock: MockConfig,
    /// Calls in flight to this deployment; others queue. With
    /// `concurrency = "adaptive"`, the ceiling of the learnt limit.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// `fixed` (`max_concurrency` as set) or `adaptive` (AIMD within
    /// `[min_concurrency, max_concurrency]`).
    #[serde(default)]
    pub concurrency: ConcurrencyMode,
    /// The adaptive limit's floor.
    #[serde(default)]
    pub min_concurrency: Option<usize>,
    /// The quota the provider granted this deployment.
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// How batches for this deployment's models run: line by line through
    /// the gateway, or forwarded to the provider's own Batch API.
    #[serde(default)]
    pub batch: BatchMode,
}

/// How a deployment's concurrency limit is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyMode {
    #[default]
    Fixed,
    Adaptive,
}

/// The adaptive limit's ceiling when `max_concurrency` is not set: high
/// enough not to bind, low enough that slow start cannot run away.
pub const ADAPTIVE_DEFAULT_MAX: usize = 256;

impl DeploymentConfig {
    /// `(min, max)` of the adaptive limit, when the deployment has one.
    pub fn adaptive_bounds(&self) -> Option<(usize, usize)> {
        (self.concurrency == ConcurrencyMode::Adaptive).then(|| {
            let min = self.min_concurrency.unwrap_or(1).max(1);
            let max = self.max_concurrency.unwrap_or(ADAPTIVE_DEFAULT_MAX);
            (min, max.max(min))
        })
    }
}

/// Where a batch runs. `Upstream` hands the whole file to the provider's
/// Batch API (its batch price) and mirrors the result; `Local` sends each
/// line through the gateway's pipeline (limits, budgets, fallbacks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    #[default]
    Local,
    Upstream,
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Time before the response starts.
    #[serde(with = "duration::serde_duration")]
    pub latency: Duration,
    /// Number of content chunks in a streamed answer.
    pub chunks: usize,
    #[serde(with = "duration::serde_duration")]
    pub chunk_interval: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            chunks: 8,
            chunk_interval: Duration::from_millis(15),
        }
    }
}
