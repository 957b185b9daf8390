//! `[tiers.NAME]`, `[orgs.NAME]`, `[models.NAME]`: per-minute limits and per-model settings.

use serde::Deserialize;

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weighted => "weighted",
            Self::LeastOutstanding => "least_outstanding",
            Self::Latency => "latency",
            Self::PrefixAffinity => "prefix_affinity",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Random by `weight` (the default).
    #[default]
    Weighted,
    /// Fewest requests in flight.
    LeastOutstanding,
    /// Power of two choices on peak-EWMA latency.
    Latency,
    /// A stable hash of `prompt_cache_key`, else `user`, else the prompt's
    /// start, so repeated prefixes land on the same upstream's prompt cache.
    PrefixAffinity,
}

/// Requests and tokens per minute; absent means no limit.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Tokenizer for TPM estimates (`o200k_base` or `cl100k_base`); by default
    /// chosen from the model name.
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Scale the deployments' weights by the share of quota each last
    /// reported left (`x-ratelimit-remaining-*` against `-limit-*`), so
    /// one near its limit gets less before it answers 429.
    #[serde(default = "super::default_true")]
    pub headroom: bool,
    /// Hedged requests: off unless set (see `HedgeSettings`).
    #[serde(default)]
    pub hedge: Option<HedgeSettings>,
    /// Models to serve from, in order, when no deployment of this one is usable
    /// or all failed their attempts.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Overrides cache eligibility for this model: `true` caches every
    /// request, `false` none.
    #[serde(default)]
    pub cache: Option<bool>,
    /// Where `standard` requests go while the expected queue wait is past
    /// `[queue] degrade_after`.
    #[serde(default)]
    pub cheaper: Option<String>,
    /// While the model is degraded (level 1 and up), requests' max output
    /// tokens are clamped to this (set when absent): shorter answers from
    /// what capacity is left.
    #[serde(default)]
    pub degraded_max_output_tokens: Option<u64>,
}

impl ModelSettings {
    pub fn limit(&self) -> RateLimit {
        RateLimit {
            rpm: self.rpm,
            tpm: self.tpm,
        }
    }
}

/// `[models.NAME.hedge]`: when a call's first token is later than the
/// `percentile` of the model's recent times to first token, the same call
/// is sent to a second deployment and the first to start answering wins.
/// `budget_percent` caps the extra calls as a share of the model's calls.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeSettings {
    #[serde(default = "default_hedge_percentile")]
    pub percentile: f64,
    #[serde(default = "default_hedge_budget")]
    pub budget_percent: f64,
}

fn default_hedge_percentile() -> f64 {
    95.0
}

fn default_hedge_budget() -> f64 {
    5.0
}
