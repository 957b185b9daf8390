//! `[[routes]]`, `[auto]`, `[[splits]]`: virtual models.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Priority, TokenBudget, default_true, default_weight};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The model name clients send, e.g. `chat`.
    pub name: String,
    /// The model for classes without an entry in `by_priority`.
    pub default: String,
    #[serde(default)]
    pub by_priority: HashMap<Priority, String>,
    #[serde(flatten)]
    pub budget: TokenBudget,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoConfig {
    #[serde(default = "default_auto_name")]
    pub name: String,
    /// Cheapest first; the last tier takes whatever no earlier tier could.
    pub tiers: Vec<AutoTier>,
}

fn default_auto_name() -> String {
    "auto".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTier {
    pub model: String,
    /// Capable of prompts up to this many tokens.
    #[serde(default)]
    pub max_prompt_tokens: Option<u64>,
    /// Capable of requests with tools.
    #[serde(default = "default_true")]
    pub tools: bool,
    /// Capable of requests with images.
    #[serde(default = "default_true")]
    pub images: bool,
    /// Prompts containing any of these (case-insensitive) need a later tier.
    #[serde(default)]
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    pub name: String,
    pub variants: Vec<SplitVariant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitVariant {
    /// Shown in `x-sluice-variant` and metrics; defaults to the model.
    #[serde(default)]
    pub name: Option<String>,
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides the request's temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Replaces the request's system prompt (or adds one).
    #[serde(default)]
    pub system_prompt: Option<String>,
}
