//! `sluice check`: a human summary of a validated config. Never prints a key.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::config::{CacheStore, Config, RateLimit, SemanticStore};
use crate::util::go_duration::format_go_duration;

pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config OK");
    let _ = writeln!(out, "listen: {}", config.server.listen);
    deployments(&mut out, config);
    models(&mut out, config);
    virtual_models(&mut out, config);
    keys(&mut out, config);
    scoped_limits(&mut out, config);
    stores(&mut out, config);
    out
}

fn deployments(out: &mut String, config: &Config) {
    let _ = writeln!(out, "deployments ({}):", config.deployments.len());
    for d in &config.deployments {
        let _ = writeln!(
            out,
            "  {:<20} provider={:<6} priority={:<3} weight={:<3} timeout={:?} models=[{}]",
            d.name,
            d.provider.as_str(),
            d.priority,
            d.weight,
            d.timeout,
            d.models.join(", ")
        );
    }
}

/// Each model with its deployments in priority order, strategy and fallbacks.
fn models(out: &mut String, config: &Config) {
    let mut models: BTreeMap<&str, Vec<(i32, &str)>> = BTreeMap::new();
    for d in &config.deployments {
        for model in &d.models {
            models.entry(model).or_default().push((d.priority, &d.name));
        }
    }
    let _ = writeln!(out, "models ({}):", models.len());
    for (model, mut deployments) in models {
        deployments.sort();
        let list: Vec<String> = deployments
            .iter()
            .map(|(priority, name)| format!("{name}(p{priority})"))
            .collect();
        let settings = config.models.get(model);
        let strategy = settings.map_or("weighted", |s| s.strategy.as_str());
        let fallbacks = settings
            .filter(|s| !s.fallbacks.is_empty())
            .map(|s| format!(" fallbacks=[{}]", s.fallbacks.join(", ")))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<24} -> {} ({strategy}){fallbacks}",
            model,
            list.join(", ")
        );
    }
}

/// Routes, the `auto` router and splits.
fn virtual_models(out: &mut String, config: &Config) {
    let virtual_count =
        config.routes.len() + config.splits.len() + usize::from(config.auto.is_some());
    if virtual_count == 0 {
        return;
    }
    let _ = writeln!(out, "virtual models ({virtual_count}):");
    for route in &config.routes {
        let mut classes: Vec<String> = route
            .by_priority
            .iter()
            .map(|(class, model)| format!("{}={model}", class.as_str()))
            .collect();
        classes.sort();
        let _ = writeln!(
            out,
            "  {:<24} route: default={} {}",
            route.name,
            route.default,
            classes.join(" ")
        );
    }
    if let Some(auto) = &config.auto {
        let tiers: Vec<&str> = auto.tiers.iter().map(|t| t.model.as_str()).collect();
        let _ = writeln!(out, "  {:<24} auto: {}", auto.name, tiers.join(" < "));
    }
    for split in &config.splits {
        let variants: Vec<String> = split
            .variants
            .iter()
            .map(|v| format!("{}:{}", v.name.as_deref().unwrap_or(&v.model), v.weight))
            .collect();
        let _ = writeln!(out, "  {:<24} split: {}", split.name, variants.join(" "));
    }
}

/// The keys, never their secrets.
fn keys(out: &mut String, config: &Config) {
    let _ = writeln!(
        out,
        "keys ({}), auth {}:",
        config.keys.len(),
        if config.auth.required {
            "required"
        } else {
            "optional"
        }
    );
    for key in &config.keys {
        let models = key
            .models
            .as_ref()
            .map_or_else(|| "all".to_owned(), |m| m.join(", "));
        let tier = key.tier.as_ref().and_then(|t| config.tiers.get(t));
        let limit = RateLimit {
            rpm: key.rpm.or(tier.and_then(|t| t.rpm)),
            tpm: key.tpm.or(tier.and_then(|t| t.tpm)),
        };
        let _ = writeln!(
            out,
            "  {:<20} org={:<12} tier={:<10} {} models=[{}]",
            key.name,
            key.org.as_deref().unwrap_or("-"),
            key.tier.as_deref().unwrap_or("-"),
            limits(limit),
            models
        );
    }
}

/// Org, model and deployment limits.
fn scoped_limits(out: &mut String, config: &Config) {
    let mut scoped: Vec<String> = Vec::new();
    for (name, limit) in &config.orgs {
        scoped.push(format!("  org {name:<24} {}", limits(*limit)));
    }
    for (name, settings) in &config.models {
        scoped.push(format!("  model {name:<22} {}", limits(settings.limit())));
    }
    for d in config
        .deployments
        .iter()
        .filter(|d| d.rpm.is_some() || d.tpm.is_some())
    {
        let quota = RateLimit {
            rpm: d.rpm,
            tpm: d.tpm,
        };
        scoped.push(format!("  deployment {:<17} {}", d.name, limits(quota)));
    }
    scoped.sort();
    let _ = writeln!(out, "limits (burst {}):", config.limits.burst);
    for line in scoped {
        let _ = writeln!(out, "{line}");
    }
}

/// Where limits, the cache, the ledger, jobs and runtime keys are kept,
/// and the local directories written.
fn stores(out: &mut String, config: &Config) {
    let store = config.redis.as_ref().map_or_else(
        || "in memory (this process only)".to_owned(),
        |redis| {
            format!(
                "redis {} (on_error = {})",
                without_password(&redis.url),
                redis.on_error.as_str()
            )
        },
    );
    let _ = writeln!(out, "limiter store: {store}");
    let _ = writeln!(out, "cache: {}", cache(config));
    let usage = match config.usage.store.as_str() {
        "sqlite" => format!("sqlite in {}", config.usage.data_dir),
        other => without_password(other),
    };
    let _ = writeln!(out, "usage ledger: {usage}");
    let _ = writeln!(out, "files, batches and async jobs: {}", jobs(config));
    let _ = writeln!(out, "runtime keys: {}", runtime_keys(config));
    for dir in crate::infra::storage_dirs::storage_dirs(config) {
        let _ = writeln!(
            out,
            "writes to: {} ({})",
            dir.resolved.display(),
            dir.setting
        );
    }
}

/// Where keys made through `/admin/keys` are kept, or that there are none.
fn runtime_keys(config: &Config) -> String {
    match crate::config::KeysStoreSpec::from_config(config) {
        Ok(None) if config.admin.token.is_none() => "off (no [admin] token)".to_owned(),
        Ok(None) => "off".to_owned(),
        Ok(Some(crate::config::KeysStoreSpec::Sqlite(path))) => {
            format!("sqlite {}", path.display())
        }
        Ok(Some(crate::config::KeysStoreSpec::Postgres(url))) => without_password(&url),
        Err(problem) => problem,
    }
}

/// Where `[batch] store` keeps jobs and files, or that the APIs are off.
fn jobs(config: &Config) -> String {
    let batch = &config.batch;
    let files = batch.files_dir_in(&config.usage.data_dir);
    let files = files.display();
    match batch.store.as_str() {
        "none" => "off".to_owned(),
        "sqlite" => format!("sqlite in {}, file bytes in {files}", config.usage.data_dir),
        other => format!("{}, file bytes in {files}", without_password(other)),
    }
}

fn cache(config: &Config) -> String {
    let cache = &config.cache;
    if !cache.enabled {
        return "off".to_owned();
    }
    let store = match cache.store {
        CacheStore::Memory => "memory",
        CacheStore::Redis => "redis",
    };
    let scope = format!("{:?}", cache.scope).to_lowercase();
    let mut line = format!(
        "{store}, scope {scope}, ttl {}",
        format_go_duration(cache.ttl)
    );
    let semantic = &cache.semantic;
    if semantic.enabled {
        let index = match (semantic.store, semantic.postgres_url.as_deref()) {
            (SemanticStore::Postgres, Some(url)) => format!("pgvector {}", without_password(url)),
            _ => "memory".to_owned(),
        };
        line.push_str(&format!(
            "; semantic: threshold {} via {}, index {index}",
            semantic.threshold, semantic.embedding_model
        ));
    }
    line
}

fn limits(limit: RateLimit) -> String {
    let show = |value: Option<u64>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    format!("rpm={:<8} tpm={:<10}", show(limit.rpm), show(limit.tpm))
}

/// `redis://user:secret@host` -> `redis://user:***@host`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
