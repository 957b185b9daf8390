//! Typed configuration: a leaf of the crate (it imports nothing of Sluice's
//! own). One file per section of the TOML file, named after it; loading
//! lives in `load`, checks in `validate`, the redacted view in `view`. The
//! rest of the gateway only ever sees a validated `Config`.

mod admin;
mod async_requests;
mod auth;
mod batch;
mod cache;
mod circuit_breaker;
mod degradation;
mod deployments;
pub(crate) mod duration;
pub(crate) mod expand;
mod health_probe;
mod keys;
mod keys_store;
mod limits;
mod load;
mod log;
mod metering;
mod metrics;
mod models;
mod otel;
mod queue;
mod realtime;
mod redis;
mod responses;
mod retry;
mod routes;
mod server;
mod usage;
mod validate;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

pub use admin::AdminConfig;
pub use async_requests::AsyncConfig;
pub use auth::AuthConfig;
pub use batch::BatchConfig;
pub use cache::{CacheConfig, CacheScope, CacheStore, SemanticConfig, SemanticStore};
pub use circuit_breaker::BreakerConfig;
pub use degradation::{DegradationConfig, StaticResponse};
pub use deployments::{
    ADAPTIVE_DEFAULT_MAX, BatchMode, ConcurrencyMode, DeploymentConfig, MockConfig, Provider,
};
pub use duration::{MAX_DURATION, from_secs, parse_duration};
pub use health_probe::ProbeConfig;
pub use keys::{KeyConfig, KeyDigest, TokenBudget, sha256};
pub use keys_store::KeysStoreSpec;
pub use limits::LimitsConfig;
pub use load::{ConfigError, load_from_path, load_from_str};
pub use log::{LogConfig, LogFormat};
pub use metering::{AlertsConfig, Budget, Price};
pub use metrics::MetricsConfig;
pub use models::{HedgeSettings, ModelSettings, RateLimit, Strategy};
pub use otel::{OtelConfig, OtlpCompression, OtlpProtocol, SamplerName};
pub use queue::{Priority, QueueConfig};
pub use realtime::RealtimeConfig;
pub use redis::{OnRedisError, RedisConfig};
pub use responses::ResponsesConfig;
pub use retry::RetryConfig;
pub use routes::{AutoConfig, AutoTier, RouteConfig, SplitConfig, SplitVariant};
pub use server::{RuntimeModel, ServerConfig};
pub use usage::UsageConfig;
pub use validate::{ANONYMOUS_ID, KeyCheck, validate};
pub use view::{View, redacted_text};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Default key limits by tier name, picked by a key's `tier`.
    #[serde(default)]
    pub tiers: HashMap<String, RateLimit>,
    /// Limits shared by all keys of an org.
    #[serde(default)]
    pub orgs: HashMap<String, RateLimit>,
    /// Fleet-wide settings per client model name.
    #[serde(default)]
    pub models: HashMap<String, ModelSettings>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    #[serde(default)]
    pub health_probe: ProbeConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    /// Virtual models routed by priority class.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// A virtual model classified into the cheapest capable tier.
    #[serde(default)]
    pub auto: Option<AutoConfig>,
    /// Virtual models split between weighted variants (canary, A/B).
    #[serde(default)]
    pub splits: Vec<SplitConfig>,
    /// USD per million tokens, by model; overrides and extends the shipped prices.
    #[serde(default)]
    pub pricing: HashMap<String, Price>,
    /// Spend limits per org (keys carry their own).
    #[serde(default)]
    pub org_budgets: HashMap<String, Budget>,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub usage: UsageConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OpenTelemetry trace export (with the `OTEL_*` variables applied).
    #[serde(default)]
    pub otel: OtelConfig,
    #[serde(default)]
    pub responses: ResponsesConfig,
    #[serde(default)]
    pub realtime: RealtimeConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub async_requests: AsyncConfig,
    /// When each model climbs the degradation ladder (`crate::engines::degrade`).
    #[serde(default)]
    pub degradation: DegradationConfig,
    /// Level 3's templated answers, first match wins.
    #[serde(default)]
    pub static_responses: Vec<StaticResponse>,
    /// The loaded settings as the file and environment gave them, with
    /// secrets redacted, and their hash: what `GET /admin/config` shows.
    #[serde(skip)]
    pub view: Arc<View>,
}

impl Config {
    /// The models a virtual name (a route, the auto router, a split) can
    /// send a call to; `None` for a name that is not virtual.
    pub fn virtual_targets(&self, name: &str) -> Option<Vec<&str>> {
        if let Some(route) = self.routes.iter().find(|route| route.name == name) {
            let classes = route.by_priority.values().map(String::as_str);
            return Some(
                std::iter::once(route.default.as_str())
                    .chain(classes)
                    .collect(),
            );
        }
        if let Some(auto) = self.auto.as_ref().filter(|auto| auto.name == name) {
            return Some(auto.tiers.iter().map(|tier| tier.model.as_str()).collect());
        }
        let split = self.splits.iter().find(|split| split.name == name)?;
        Some(
            split
                .variants
                .iter()
                .map(|variant| variant.model.as_str())
                .collect(),
        )
    }
}

pub(crate) fn default_weight() -> u32 {
    1
}

pub(crate) fn default_true() -> bool {
    true
}
