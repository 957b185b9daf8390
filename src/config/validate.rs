//! Semantic checks that serde cannot express. Every message starts with the
//! path of the offending value, e.g. `deployments[1].base_url: ...`.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{ADAPTIVE_DEFAULT_MAX, ConcurrencyMode, Config, DeploymentConfig, Provider};

/// `[server] workers` past this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

pub fn validate(config: &Config) -> Result<(), String> {
    let mut problems = Vec::new();
    if config.server.listen.parse::<SocketAddr>().is_err() {
        problems.push(format!(
            "server.listen: `{}` is not an address like 127.0.0.1:8080",
            config.server.listen
        ));
    }
    if config.server.max_body_bytes == 0 {
        problems.push("server.max_body_bytes: must be greater than 0".to_owned());
    }
    if config.server.max_response_bytes == 0 {
        problems.push("server.max_response_bytes: must be greater than 0".to_owned());
    }
    if config.server.workers > MAX_WORKERS {
        problems.push(format!(
            "server.workers: at most {MAX_WORKERS} (0 means one per core)"
        ));
    }
    if config.server.stream_keepalive.is_zero() {
        problems.push("server.stream_keepalive: must be greater than 0".to_owned());
    }
    check_connections(config, &mut problems);
    problems.extend(config.otel.problems());
    check_cors(&config.server.cors_origins, &mut problems);
    check_deployments(config, &mut problems);
    let served: HashSet<&str> = config
        .deployments
        .iter()
        .flat_map(|d| d.models.iter().map(String::as_str))
        .collect();
    check_keys(config, &served, &mut problems);
    check_limits(config, &mut problems);
    check_models(config, &served, &mut problems);
    check_queue(config, &mut problems);
    check_routing(config, &served, &mut problems);
    check_metering(config, &mut problems);
    check_resilience(config, &mut problems);
    check_stores(config, &served, &mut problems);
    check_stored_objects_and_realtime(config, &served, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// The connection layer's deadlines and the optional admin and metrics listeners.
fn check_connections(config: &Config, problems: &mut Vec<String>) {
    let server = &config.server;
    for (name, value) in [
        ("header_read_timeout", server.header_read_timeout),
        ("body_read_timeout", server.body_read_timeout),
        ("idle_timeout", server.idle_timeout),
    ] {
        if value.is_zero() {
            problems.push(format!("server.{name}: must be greater than 0"));
        }
    }
    for (at, listen) in [
        ("admin.listen", &config.admin.listen),
        ("metrics.listen", &config.metrics.listen),
    ] {
        if let Some(listen) = listen
            && listen.parse::<SocketAddr>().is_err()
        {
            problems.push(format!(
                "{at}: `{listen}` is not an address like 127.0.0.1:9090"
            ));
        }
    }
    if config.admin.listen.is_some() && config.admin.token.is_none() {
        problems
            .push("admin.listen: set admin.token too; the admin API is off without one".to_owned());
    }
    if let Err(problem) = super::KeysStoreSpec::parse(&config.admin.keys_store, "") {
        problems.push(format!("admin.keys_store: {problem}"));
    }
    let poll = config.admin.keys_poll_interval;
    if poll < std::time::Duration::from_millis(100) || poll > std::time::Duration::from_secs(3600) {
        problems.push("admin.keys_poll_interval: must be between 100ms and 1h".to_owned());
    }
    check_jobs(config, problems);
}

fn check_jobs(config: &Config, problems: &mut Vec<String>) {
    let batch = &config.batch;
    if let Err(problem) = super::KeysStoreSpec::parse_named(&batch.store, "", "jobs.sqlite") {
        problems.push(format!("batch.store: {problem}"));
    }
    if !(0.0..=1.0).contains(&batch.discount) {
        problems.push("batch.discount: must be between 0 and 1".to_owned());
    }
    if !(0.0..=1.0).contains(&batch.upstream_discount) {
        problems.push("batch.upstream_discount: must be between 0 and 1".to_owned());
    }
    if batch.max_concurrency == 0
        || batch.max_lines == 0
        || batch.max_file_bytes == 0
        || batch.max_stored_bytes_per_key == 0
        || batch.max_open_batches_per_key == 0
    {
        problems.push(
            "batch: max_concurrency, max_lines, max_file_bytes, max_stored_bytes_per_key and \
             max_open_batches_per_key must be above 0"
                .to_owned(),
        );
    }
    let second = std::time::Duration::from_secs(1);
    if batch.lease < 3 * second || batch.poll_interval.is_zero() {
        problems.push("batch: lease must be at least 3s and poll_interval above 0".to_owned());
    }
    if batch.upstream_poll_interval.is_zero() {
        problems.push("batch.upstream_poll_interval: must be above 0".to_owned());
    }
    if config.async_requests.max_concurrency == 0 || config.async_requests.max_queued_per_key == 0 {
        problems.push(
            "async_requests: max_concurrency and max_queued_per_key must be above 0".to_owned(),
        );
    }
    for host in &config.async_requests.callback_hosts {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if bare.is_empty() || bare.contains(['/', ':', '@', '*', ' ']) {
            problems.push(format!(
                "async_requests.callback_hosts: `{}` is not a host name or *.domain",
                crate::util::text::clip(host)
            ));
        }
    }
}

fn check_deployments(config: &Config, problems: &mut Vec<String>) {
    if config.deployments.is_empty() {
        problems.push("deployments: at least one [[deployments]] entry is required".to_owned());
    }
    let mut names = HashSet::new();
    for (index, deployment) in config.deployments.iter().enumerate() {
        let at = format!("deployments[{index}]");
        if deployment.name.trim().is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        } else if !names.insert(deployment.name.as_str()) {
            problems.push(format!(
                "{at}.name: `{}` is used by another deployment",
                deployment.name
            ));
        }
        if has_credentials(&deployment.base_url) {
            // Not echoed: the URL holds a secret.
            problems.push(format!(
                "{at}.base_url: must not contain credentials (`user:password@`); put the key in `api_key`"
            ));
        } else if deployment.provider != Provider::Mock && !is_http_url(&deployment.base_url) {
            problems.push(format!(
                "{at}.base_url: `{}` is not an absolute http:// or https:// URL",
                deployment.base_url
            ));
        }
        if deployment.provider == Provider::Azure && deployment.api_version.is_none() {
            problems.push(format!(
                "{at}.api_version: required for Azure (e.g. \"2024-10-21\" or \"v1\")"
            ));
        }
        if deployment.batch == super::BatchMode::Upstream
            && matches!(deployment.provider, Provider::Mock | Provider::Anthropic)
        {
            problems.push(format!(
                "{at}.batch: \"upstream\" needs an openai or azure provider"
            ));
        }
        if deployment.provider == Provider::Anthropic && deployment.api_key.is_none() {
            problems.push(format!("{at}.api_key: required for Anthropic"));
        }
        if deployment.models.is_empty() {
            problems.push(format!("{at}.models: list at least one model name"));
        }
        if deployment.weight == 0 {
            problems.push(format!("{at}.weight: must be at least 1"));
        }
        if deployment.timeout.is_zero() {
            problems.push(format!("{at}.timeout: must be greater than 0"));
        }
        for client_model in deployment.model_map.keys() {
            if !deployment.models.contains(client_model) {
                problems.push(format!(
                    "{at}.model_map.{client_model}: not listed in {at}.models"
                ));
            }
        }
    }
}

fn check_keys(config: &Config, served: &HashSet<&str>, problems: &mut Vec<String>) {
    let mut check = KeyCheck::empty(config, served.iter().map(|model| (*model).to_owned()));
    for (index, key) in config.keys.iter().enumerate() {
        problems.extend(check.admit(&format!("keys[{index}]"), key));
    }
}

/// The id of callers without a key (`[auth] required = false`): no key may
/// take it, or anonymous callers would share that key's limits, spend,
/// cache entries and stored responses.
pub const ANONYMOUS_ID: &str = "anonymous";

/// Checks keys one at a time against a config and the keys admitted before
/// them: what the file's `[[keys]]` get at load, and what each runtime key
/// gets before it is merged in (one that does not fit is left out alone,
/// instead of failing the whole set).
pub struct KeyCheck<'a> {
    config: &'a Config,
    served: HashSet<String>,
    names: HashSet<String>,
    ids: HashSet<String>,
    digests: HashSet<super::KeyDigest>,
}

impl<'a> KeyCheck<'a> {
    fn empty(config: &'a Config, served: impl Iterator<Item = String>) -> Self {
        Self {
            config,
            served: served.collect(),
            names: HashSet::new(),
            ids: HashSet::new(),
            digests: HashSet::new(),
        }
    }

    /// Seeded with `config`'s own (already valid) keys.
    pub fn after_file(config: &'a Config) -> Self {
        let served = config
            .deployments
            .iter()
            .flat_map(|d| d.models.iter().cloned());
        let mut check = Self::empty(config, served);
        for key in &config.keys {
            check.names.insert(key.name.clone());
            check.ids.insert(key.id().to_owned());
            check.digests.extend(key.digest());
        }
        check
    }

    /// The problems of `key` (located by `at`); none means it is admitted.
    pub fn admit(&mut self, at: &str, key: &super::KeyConfig) -> Vec<String> {
        let mut problems = Vec::new();
        self.check_id(at, key, &mut problems);
        if key.name.trim().is_empty() {
            problems.push(format!("{at}.name: must not be empty"));
        } else if !self.names.insert(key.name.clone()) {
            problems.push(format!(
                "{at}.name: `{}` is used by another key",
                crate::util::text::clip(&key.name)
            ));
        }
        match (&key.key, &key.key_sha256) {
            (Some(_), Some(_)) => {
                problems.push(format!("{at}: set either `key` or `key_sha256`, not both"))
            }
            (None, None) => problems.push(format!("{at}: set `key` or `key_sha256`")),
            (Some(plain), None) if plain.len() < 8 => {
                problems.push(format!("{at}.key: must be at least 8 characters"))
            }
            (None, Some(hash)) if super::keys::decode_sha256(hash).is_none() => problems.push(
                format!("{at}.key_sha256: must be 64 hex characters (SHA-256 of the key)"),
            ),
            _ => {}
        }
        if let Some(digest) = key.digest()
            && !self.digests.insert(digest)
        {
            problems.push(format!("{at}: the same key is configured twice"));
        }
        if let Some(tier) = &key.tier
            && !self.config.tiers.contains_key(tier)
        {
            problems.push(format!(
                "{at}.tier: no [tiers.{}] section",
                crate::util::text::clip(tier)
            ));
        }
        for model in key.models.iter().flatten() {
            if !self.served.contains(model) {
                problems.push(format!(
                    "{at}.models: `{}` is not served by any deployment",
                    crate::util::text::clip(model)
                ));
            }
        }
        problems
    }

    /// An explicit id is 1-64 of `[A-Za-z0-9_.-]` (it appears in URLs); one
    /// defaulted from the name is not held to that, so existing names stay
    /// valid. Either way no two keys share an id, and none is `anonymous`.
    fn check_id(&mut self, at: &str, key: &super::KeyConfig, problems: &mut Vec<String>) {
        if let Some(id) = &key.id {
            let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
            if !(1..=64).contains(&id.len()) || !id.chars().all(valid_char) {
                problems.push(format!(
                    "{at}.id: must be 1 to 64 characters of A-Z, a-z, 0-9, `_`, `.`, `-`"
                ));
            }
        }
        if key.id() == ANONYMOUS_ID {
            problems.push(format!(
                "{at}.id: `{ANONYMOUS_ID}` is reserved for callers without a key (an id defaults to the name; set another `id`)"
            ));
        } else if !self.ids.insert(key.id().to_owned()) {
            problems.push(format!(
                "{at}.id: `{}` is the id of another key (an id defaults to the name)",
                crate::util::text::clip(key.id())
            ));
        }
    }
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    matches!(rest, Some(host) if !host.is_empty() && !host.starts_with('/'))
        && url.parse::<http::Uri>().is_ok()
}

/// `user[:password]@` in a URL's authority: reqwest would send it as a second
/// `Authorization` header beside the deployment's key.
/// Read off the text, not a parsed URI, so a URL too broken to parse is not
/// echoed with its password either.
fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// Zero limits and the burst share.
fn check_limits(config: &Config, problems: &mut Vec<String>) {
    let limits = &config.limits;
    if !(0.0..=100.0).contains(&limits.burst) {
        problems.push("limits.burst: must be between 0 and 100 (a fraction of the limit)".into());
    }
    let mut zeros = Vec::new();
    let mut zero = |path: String, value: Option<u64>| {
        if value == Some(0) {
            zeros.push(format!("{path}: must be at least 1 (omit it for no limit)"));
        }
    };
    for (index, key) in config.keys.iter().enumerate() {
        zero(format!("keys[{index}].rpm"), key.rpm);
        zero(format!("keys[{index}].tpm"), key.tpm);
    }
    for (index, deployment) in config.deployments.iter().enumerate() {
        zero(format!("deployments[{index}].rpm"), deployment.rpm);
        zero(format!("deployments[{index}].tpm"), deployment.tpm);
    }
    for (section, table) in [("tiers", &config.tiers), ("orgs", &config.orgs)] {
        for (name, limit) in table {
            zero(format!("{section}.{name}.rpm"), limit.rpm);
            zero(format!("{section}.{name}.tpm"), limit.tpm);
        }
    }
    for (name, settings) in &config.models {
        zero(format!("models.{name}.rpm"), settings.rpm);
        zero(format!("models.{name}.tpm"), settings.tpm);
    }
    problems.append(&mut zeros);
}

/// `[models.*]`: served, tokenizer names, fallbacks.
fn check_models(config: &Config, served: &HashSet<&str>, problems: &mut Vec<String>) {
    for (name, settings) in &config.models {
        if !served.contains(name.as_str()) {
            problems.push(format!("models.{name}: not served by any deployment"));
        }
        if let Some(hedge) = &settings.hedge {
            check_hedge(name, hedge, problems);
        }
        if let Some(encoding) = &settings.encoding
            && !matches!(encoding.as_str(), "o200k_base" | "cl100k_base")
        {
            problems.push(format!(
                "models.{name}.encoding: `{encoding}` is not o200k_base or cl100k_base"
            ));
        }
    }
    for (name, settings) in &config.models {
        for (index, fallback) in settings.fallbacks.iter().enumerate() {
            if fallback == name || !served.contains(fallback.as_str()) {
                problems.push(format!(
                    "models.{name}.fallbacks[{index}]: `{fallback}` is not another served model"
                ));
            }
        }
    }
}

/// A percentile that leaves a tail to hedge, and a budget that keeps the
/// extra calls a minority.
fn check_hedge(name: &str, hedge: &crate::config::HedgeSettings, problems: &mut Vec<String>) {
    if !(50.0..100.0).contains(&hedge.percentile) {
        problems.push(format!(
            "models.{name}.hedge.percentile: must be at least 50 and below 100"
        ));
    }
    if !(hedge.budget_percent > 0.0 && hedge.budget_percent <= 50.0) {
        problems.push(format!(
            "models.{name}.hedge.budget_percent: must be above 0 and at most 50"
        ));
    }
}

fn check_queue(config: &Config, problems: &mut Vec<String>) {
    if config.queue.starvation_every == 0 {
        problems.push("queue.starvation_every: must be at least 1".into());
    }
    for (index, deployment) in config.deployments.iter().enumerate() {
        if deployment.max_concurrency == Some(0) {
            problems.push(format!(
                "deployments[{index}].max_concurrency: must be at least 1"
            ));
        }
        check_adaptive(index, deployment, problems);
    }
}

/// `min_concurrency` is the adaptive limit's floor: at least 1, at most
/// the ceiling, and meaningless for a fixed limit.
fn check_adaptive(index: usize, deployment: &DeploymentConfig, problems: &mut Vec<String>) {
    let Some(min) = deployment.min_concurrency else {
        return;
    };
    let at = format!("deployments[{index}].min_concurrency");
    if deployment.concurrency != ConcurrencyMode::Adaptive {
        problems.push(format!("{at}: only with concurrency = \"adaptive\""));
    } else if min == 0 {
        problems.push(format!("{at}: must be at least 1"));
    } else if min > deployment.max_concurrency.unwrap_or(ADAPTIVE_DEFAULT_MAX) {
        problems.push(format!("{at}: must not exceed max_concurrency"));
    }
}

/// Routes, `auto`, splits and cheaper siblings name served models; virtual
/// names do not shadow served ones.
fn check_routing(config: &Config, served: &HashSet<&str>, problems: &mut Vec<String>) {
    let mut virtual_names = HashSet::new();
    let check_target = |at: String, model: &str, problems: &mut Vec<String>| {
        if !served.contains(model) {
            problems.push(format!("{at}: `{model}` is not served by any deployment"));
        }
    };
    for (index, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{index}]");
        virtual_names.insert(route.name.as_str());
        check_target(format!("{at}.default"), &route.default, problems);
        for (class, model) in &route.by_priority {
            check_target(
                format!("{at}.by_priority.{}", class.as_str()),
                model,
                problems,
            );
        }
    }
    if let Some(auto) = &config.auto {
        virtual_names.insert(auto.name.as_str());
        if auto.tiers.is_empty() {
            problems.push("auto.tiers: list at least one tier".into());
        }
        for (index, tier) in auto.tiers.iter().enumerate() {
            check_target(format!("auto.tiers[{index}].model"), &tier.model, problems);
        }
    }
    for (index, split) in config.splits.iter().enumerate() {
        let at = format!("splits[{index}]");
        virtual_names.insert(split.name.as_str());
        if split
            .variants
            .iter()
            .map(|v| u64::from(v.weight))
            .sum::<u64>()
            == 0
        {
            problems.push(format!(
                "{at}.variants: list at least one variant with a weight"
            ));
        }
        for (v, variant) in split.variants.iter().enumerate() {
            check_target(
                format!("{at}.variants[{v}].model"),
                &variant.model,
                problems,
            );
        }
    }
    for name in virtual_names {
        if served.contains(name) {
            problems.push(format!(
                "`{name}` is both a deployment model and a route/auto/split name"
            ));
        }
    }
    for (name, settings) in &config.models {
        if let Some(cheaper) = &settings.cheaper {
            check_target(format!("models.{name}.cheaper"), cheaper, problems);
        }
    }
}

/// Budgets, alerts and the usage ledger.
fn check_metering(config: &Config, problems: &mut Vec<String>) {
    let budgets = config
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("keys[{i}]"), k.spend))
        .chain(
            config
                .org_budgets
                .iter()
                .map(|(name, b)| (format!("org_budgets.{name}"), *b)),
        );
    for (at, budget) in budgets {
        for (field, value) in [
            ("budget_daily_usd", budget.budget_daily_usd),
            ("budget_monthly_usd", budget.budget_monthly_usd),
        ] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                problems.push(format!("{at}.{field}: must be a positive amount"));
            }
        }
    }
    if config
        .alerts
        .thresholds
        .iter()
        .any(|t| !(*t > 0.0 && *t <= 10.0))
    {
        problems.push("alerts.thresholds: shares must be above 0 (1.0 = the whole budget)".into());
    }
    if let Some(url) = &config.alerts.webhook_url
        && !is_http_url(url)
    {
        problems.push(format!(
            "alerts.webhook_url: `{}` is not an http(s) URL",
            super::view::redacted_text(url)
        ));
    }
    let usage = &config.usage;
    if !(usage.store == "sqlite"
        || usage.store == "none"
        || usage.store.starts_with("postgres://")
        || usage.store.starts_with("postgresql://"))
    {
        problems.push(format!(
            "usage.store: `{}` is not \"sqlite\", \"none\" or a postgres:// URL",
            super::view::redacted_text(&usage.store)
        ));
    }
    if usage.batch_size == 0 || usage.buffer < usage.batch_size {
        problems.push(
            "usage.batch_size / buffer: batch_size must be at least 1 and at most buffer".into(),
        );
    }
    if usage.journal_interval.is_zero()
        || usage.journal_interval > std::time::Duration::from_secs(1)
    {
        problems.push("usage.journal_interval: must be between 1ms and 1s".into());
    }
}

/// Retries and circuit breakers.
fn check_resilience(config: &Config, problems: &mut Vec<String>) {
    let probe = &config.health_probe;
    if probe.enabled && (probe.interval.is_zero() || probe.timeout.is_zero()) {
        problems.push("health_probe.interval, timeout: must be greater than 0".into());
    }
    let retry = &config.retry;
    if retry.max_attempts == 0 {
        problems.push("retry.max_attempts: must be at least 1".into());
    }
    if !(0.0..=10.0).contains(&retry.budget_ratio) || retry.budget_min_per_sec < 0.0 {
        problems.push(
            "retry.budget_ratio / budget_min_per_sec: must be non-negative (ratio at most 10)"
                .into(),
        );
    }
    let breaker = &config.circuit_breaker;
    if breaker.failure_threshold == 0
        || breaker.half_open_max_calls == 0
        || breaker.success_threshold == 0
    {
        problems.push("circuit_breaker: failure_threshold, half_open_max_calls and success_threshold must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&breaker.failure_rate) || breaker.failure_rate == 0.0 {
        problems.push("circuit_breaker.failure_rate: must be in (0, 1]".into());
    }
}

/// The admin token, the cache and its stores, Redis.
/// `[responses] home_model` and `[realtime]`.
fn check_stored_objects_and_realtime(
    config: &Config,
    served: &HashSet<&str>,
    problems: &mut Vec<String>,
) {
    if let Some(home) = &config.responses.home_model
        && !served.contains(home.as_str())
    {
        problems.push(format!(
            "responses.home_model: `{home}` is not served by any deployment"
        ));
    }
    let realtime = &config.realtime;
    if realtime.max_sessions_per_key == 0 {
        problems.push("realtime.max_sessions_per_key: must be at least 1".into());
    }
    if realtime.idle_timeout.is_zero() || realtime.max_session.is_zero() {
        problems
            .push("realtime.idle_timeout and realtime.max_session: must be greater than 0".into());
    }
    if realtime.max_message_bytes < 1024 {
        problems.push("realtime.max_message_bytes: must be at least 1024".into());
    }
}

fn check_stores(config: &Config, served: &HashSet<&str>, problems: &mut Vec<String>) {
    if config.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
        problems.push("admin.token: use at least 16 characters".into());
    }
    if config.cache.enabled
        && config.cache.store == super::CacheStore::Redis
        && config.redis.is_none()
    {
        problems.push("cache.store: \"redis\" needs a [redis] url".into());
    }
    let semantic = &config.cache.semantic;
    if semantic.enabled {
        if !served.contains(semantic.embedding_model.as_str()) {
            problems.push(format!(
                "cache.semantic.embedding_model: `{}` is not served by any deployment",
                semantic.embedding_model
            ));
        }
        if !(0.0..=1.0).contains(&semantic.threshold) {
            problems.push("cache.semantic.threshold: must be a cosine between 0 and 1".into());
        }
        if semantic
            .degraded_threshold
            .is_some_and(|looser| !(0.0..=semantic.threshold).contains(&looser))
        {
            problems.push(
                "cache.semantic.degraded_threshold: must be a cosine between 0 and `threshold`"
                    .into(),
            );
        }
        let postgres_url = semantic.postgres_url.as_deref().unwrap_or_default();
        if semantic.store == super::SemanticStore::Postgres && !postgres_url.starts_with("postgres")
        {
            problems.push(
                "cache.semantic.postgres_url: store = \"postgres\" needs a postgres:// URL".into(),
            );
        }
    }
    if config.responses.ttl.is_zero() || config.responses.max_entries == 0 {
        problems.push("responses: ttl and max_entries must be greater than 0".into());
    }
    if let Some(redis) = &config.redis {
        if !(redis.url.starts_with("redis://") || redis.url.starts_with("rediss://")) {
            problems.push(format!(
                "redis.url: `{}` is not a redis:// or rediss:// URL",
                super::view::redacted_text(&redis.url)
            ));
        }
        if redis.timeout.is_zero() {
            problems.push("redis.timeout: must be greater than 0".into());
        }
    }
}

/// Each origin is `*` or `scheme://host[:port]`, as a browser sends it
/// (no path, no trailing slash: it would never match).
fn check_cors(origins: &[String], problems: &mut Vec<String>) {
    for (i, origin) in origins.iter().enumerate() {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let valid = origin == "*"
            || host.is_some_and(|host| {
                !host.is_empty()
                    && !host.contains('/')
                    && http::HeaderValue::from_str(origin).is_ok()
            });
        if !valid {
            problems.push(format!(
                "server.cors_origins[{i}]: `{origin}` is not `*` or an origin like https://app.example"
            ));
        }
    }
}
