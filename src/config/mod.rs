//! Typed configuration. Loading lives in `load`, checks in `validate`; the rest
//! of the gateway only ever sees a validated `Config`.

pub(crate) mod duration;
pub(crate) mod expand;
mod jobs;
mod keys_store;
mod load;
mod validate;
mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use duration::{MAX_DURATION, from_secs, parse_duration};
pub use jobs::{AsyncConfig, BatchConfig};
pub use keys_store::KeysStoreSpec;
pub use load::{ConfigError, load_from_path, load_from_str};
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
    #[serde(default)]
    pub responses: ResponsesConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub async_requests: AsyncConfig,
    /// When each model climbs the degradation ladder (`crate::degrade`).
    #[serde(default)]
    pub degradation: crate::degrade::DegradationConfig,
    /// Level 3's templated answers, first match wins.
    #[serde(default)]
    pub static_responses: Vec<crate::degrade::StaticResponse>,
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

/// Stored responses (`previous_response_id`, `GET /v1/responses/{id}`...)
/// live on the provider account that made them: which deployment made each
/// id is remembered this long, in memory (bounded) and in Redis when set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    #[serde(with = "duration::serde_duration")]
    pub ttl: Duration,
    /// Ids kept in this replica's memory; the oldest go first.
    pub max_entries: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        Self {
            // OpenAI keeps stored responses for 30 days.
            ttl: Duration::from_secs(30 * 24 * 3600),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Adds `sluice_key_requests_total{key, status}`: one series per key, so
    /// off by default.
    pub per_key: bool,
    /// Serve `/metrics` only on this address (and not on `[server] listen`).
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// `"sqlite"` (a file in `data_dir`), a `postgres://` URL, or `"none"`.
    pub store: String,
    pub data_dir: String,
    /// Records per write.
    pub batch_size: usize,
    /// Longest a record waits before it is written.
    #[serde(with = "duration::serde_duration")]
    pub flush_interval: Duration,
    /// How often new records are appended to the local journal: a record
    /// answered this long before a crash is replayed at the next start.
    #[serde(with = "duration::serde_duration")]
    pub journal_interval: Duration,
    /// Records held (journaled, not yet in the store) while the store is slow or down; more are dropped (and counted).
    pub buffer: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            store: "sqlite".to_owned(),
            data_dir: "data".to_owned(),
            batch_size: 500,
            flush_interval: Duration::from_secs(1),
            journal_interval: Duration::from_millis(2),
            buffer: 100_000,
        }
    }
}

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBudget {
    /// Prompts with more tokens get 400 `context_length_exceeded`.
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    /// The request's max output tokens is clamped to this, or set when absent.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
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

/// Request priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    Realtime,
    Standard,
    Batch,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Self::Critical,
        Self::Realtime,
        Self::Standard,
        Self::Batch,
        Self::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Realtime => "realtime",
            Self::Standard => "standard",
            Self::Batch => "batch",
            Self::Low => "low",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(text.trim()))
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Requests waiting for a slot, all classes together; more get 503.
    pub max_depth: usize,
    /// How long a request may wait for a slot before it gets 503.
    #[serde(with = "duration::serde_duration")]
    pub max_wait: Duration,
    /// Per-class overrides of `max_wait`, e.g. `{ batch = "10m" }`.
    #[serde(with = "duration::serde_map")]
    pub max_wait_by_class: HashMap<Priority, Duration>,
    /// Every Nth slot goes to the longest-waiting request of any class, so
    /// lower classes still move under constant higher-class load.
    pub starvation_every: u32,
    /// Expected wait past which `standard` requests go to `[models.X] cheaper`.
    #[serde(with = "duration::serde_option")]
    pub degrade_after: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_depth: 1000,
            max_wait: Duration::from_secs(30),
            max_wait_by_class: HashMap::new(),
            starvation_every: 10,
            degrade_after: None,
        }
    }
}

impl QueueConfig {
    pub fn max_wait(&self, class: Priority) -> Duration {
        self.max_wait_by_class
            .get(&class)
            .copied()
            .unwrap_or(self.max_wait)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Entries are served only to the key that stored them (the default).
    #[default]
    Key,
    /// Shared by the keys of one org.
    Org,
    /// Shared by everyone.
    Global,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStore {
    #[default]
    Memory,
    /// Shared by replicas through `[redis] url`.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    pub scope: CacheScope,
    /// Default time to live; a request may set `x-sluice-cache-ttl` (seconds or `30s`).
    #[serde(with = "duration::serde_duration")]
    pub ttl: Duration,
    /// How long past its TTL an entry is kept to answer calls of a degraded
    /// model (ladder levels 2-3); other calls never see it. 0 = off.
    #[serde(with = "duration::serde_duration")]
    pub stale_for: Duration,
    /// Memory store size bound, in bytes of cached responses.
    pub max_bytes: u64,
    /// Larger responses are not cached.
    pub max_entry_bytes: usize,
    /// Cache every request, not only those meant to repeat (temperature 0 or a seed).
    pub cache_all: bool,
    pub store: CacheStore,
    pub semantic: SemanticConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SemanticConfig {
    pub enabled: bool,
    /// Cosine similarity at or above which a cached answer is reused.
    pub threshold: f32,
    /// While the model is degraded (ladder levels 2-3), matches at or above
    /// this (looser) similarity answer too: a near answer beats a 503.
    pub degraded_threshold: Option<f32>,
    /// A model this gateway serves through `/v1/embeddings`.
    pub embedding_model: String,
    /// Bound on the embedding call; past it the request is a plain miss.
    #[serde(with = "duration::serde_duration")]
    pub timeout: Duration,
    /// Index size bound (oldest and expired entries go first); memory only.
    pub max_entries: usize,
    pub store: SemanticStore,
    /// With `store = "postgres"`: a database with the pgvector extension
    /// (created if missing), e.g. `postgres://sluice@db:5432/sluice`.
    pub postgres_url: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticStore {
    /// An HNSW index in this process.
    #[default]
    Memory,
    /// A pgvector table shared by replicas.
    Postgres,
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 0.95,
            degraded_threshold: None,
            embedding_model: "text-embedding-3-small".to_owned(),
            timeout: Duration::from_millis(300),
            max_entries: 100_000,
            store: SemanticStore::Memory,
            postgres_url: None,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            scope: CacheScope::Key,
            ttl: Duration::from_secs(3600),
            stale_for: Duration::ZERO,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 4 * 1024 * 1024,
            cache_all: false,
            store: CacheStore::Memory,
            semantic: SemanticConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Upstream attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff before retrying the same deployment: full jitter in
    /// `[0, min(max_delay, base_delay * 2^n)]`.
    #[serde(with = "duration::serde_duration")]
    pub base_delay: Duration,
    #[serde(with = "duration::serde_duration")]
    pub max_delay: Duration,
    /// Longer upstream hints are not waited out on the same deployment.
    #[serde(with = "duration::serde_duration")]
    pub max_retry_after: Duration,
    /// Retries may add at most this fraction to the request rate...
    pub budget_ratio: f64,
    /// ...plus this many retries per second.
    pub budget_min_per_sec: f64,
    /// How long a 429 without any hint takes a deployment out of rotation.
    #[serde(with = "duration::serde_duration")]
    pub default_throttle: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_min_per_sec: 10.0,
            default_throttle: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// Failure fraction over `window` (once `min_calls` were made) that opens it.
    pub failure_rate: f64,
    #[serde(with = "duration::serde_duration")]
    pub window: Duration,
    pub min_calls: u32,
    /// How long the circuit stays open before trial calls.
    #[serde(with = "duration::serde_duration")]
    pub recovery_timeout: Duration,
    pub half_open_max_calls: u32,
    /// Successful trials (or probes) that close it again.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 20,
            recovery_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
            success_threshold: 2,
        }
    }
}

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

#[derive(Debug, Clone, Default, Deserialize)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Admit requests unlimited while Redis is unreachable (logged and counted).
    #[default]
    FailOpen,
    /// Refuse requests with 503 while Redis is unreachable.
    FailClosed,
}

impl OnRedisError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    #[serde(default)]
    pub on_error: OnRedisError,
    /// Prefix of every key Sluice writes, so fleets can share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Bound on one limiter round trip; past it the `on_error` policy applies.
    #[serde(default = "default_redis_timeout", with = "duration::serde_duration")]
    pub timeout: Duration,
}

fn default_key_prefix() -> String {
    "sluice".to_owned()
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(250)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Deadline for an upstream answer to start (headers, or the whole body when not streaming).
    #[serde(with = "duration::serde_duration")]
    pub request_timeout: Duration,
    /// SSE comment interval while a stream waits for its first upstream byte.
    #[serde(with = "duration::serde_duration")]
    pub stream_keepalive: Duration,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    #[serde(with = "duration::serde_duration")]
    pub shutdown_grace: Duration,
    /// After SIGTERM/SIGINT, how long `/readyz` answers 503 while every
    /// listener keeps serving (HTTP/1 answers carry `connection: close`),
    /// so a load balancer that polls readiness stops sending first; then
    /// the listeners close and `shutdown_grace` begins.
    #[serde(with = "duration::serde_duration")]
    pub drain_delay: Duration,
    /// Upstream calls in flight across the gateway; 0 means no limit. Others queue.
    pub max_concurrency: usize,
    /// Largest non-streamed upstream answer read into memory, in bytes; past it
    /// the call fails with a 502 instead of the gateway growing without bound.
    /// The default fits the largest real embeddings answer (2048 inputs of
    /// 3072 floats: 70 to 190 MB as JSON, by digits and indentation).
    pub max_response_bytes: usize,
    /// A connection must deliver a complete request head this soon after it
    /// opens or its next request's first byte (slowloris defence).
    #[serde(with = "duration::serde_duration")]
    pub header_read_timeout: Duration,
    /// Deadline for a proxied request's whole body, from its head; then 408.
    #[serde(with = "duration::serde_duration")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    #[serde(with = "duration::serde_duration")]
    pub idle_timeout: Duration,
    /// Client connections open at once, all listeners together; more are
    /// answered 503. 0 derives it from the open-file limit.
    pub max_connections: usize,
    /// Browser origins allowed to call the API (`["*"]`: any); empty, the
    /// default, sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Reload when the config file's content changes (checked every second);
    /// SIGHUP and `POST /admin/reload` work either way.
    pub watch_config: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(600),
            stream_keepalive: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            max_concurrency: 0,
            max_response_bytes: 256 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            cors_origins: Vec::new(),
            watch_config: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// With `false`, requests without a key are served as `anonymous`.
    pub required: bool,
    /// Failed authentication attempts a client address may make per minute
    /// (and at once) before its attempts are refused with 429; 0 turns the
    /// throttle off (e.g. behind a proxy that hides client addresses).
    pub failed_auth_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: true,
            failed_auth_per_minute: 120,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `sluice=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Openai,
    Azure,
    /// In-process simulated OpenAI upstream, for trying Sluice without a provider account.
    Mock,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
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

fn default_weight() -> u32 {
    1
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    #[serde(default)]
    pub key: Option<String>,
    /// Hex SHA-256 of the key, so plain keys need not sit in config files.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// A stable id (`/admin/keys/{id}`): limiter state, cache scope, spend
    /// and stored responses follow it, so renaming a key orphans nothing.
    /// Defaults to the name.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub org: Option<String>,
    /// Allow-list of model names; absent means every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Names a `[tiers.NAME]` whose limits apply where `rpm`/`tpm` are unset.
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// `false` keeps this key's requests out of the response cache.
    #[serde(default = "default_true")]
    pub cache: bool,
    /// The class of this key's requests without an `x-sluice-priority` header.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The highest class this key may ask for.
    #[serde(default)]
    pub max_priority: Option<Priority>,
    /// At degradation level 4 (maintenance), this key's calls are accepted
    /// as asynchronous jobs (202) that run once the model is back, instead
    /// of a 503.
    #[serde(default)]
    pub queue_in_maintenance: bool,
    #[serde(flatten)]
    pub budget: TokenBudget,
    #[serde(flatten)]
    pub spend: Budget,
}

fn default_true() -> bool {
    true
}

impl KeyConfig {
    /// The stable id: `id` when set, else the name.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(&self.name)
    }

    /// SHA-256 of the key, whichever way the file gave it; `None` when misconfigured.
    pub fn digest(&self) -> Option<KeyDigest> {
        match (&self.key, &self.key_sha256) {
            (Some(plain), None) => Some(sha256(plain)),
            (None, Some(hex_digest)) => decode_sha256(hex_digest),
            _ => None,
        }
    }
}

/// Keys are stored and compared only as SHA-256 digests.
pub type KeyDigest = [u8; 32];

pub fn sha256(text: &str) -> KeyDigest {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

fn decode_sha256(hex_digest: &str) -> Option<KeyDigest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut digest).ok()?;
    Some(digest)
}
