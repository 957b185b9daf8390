//! `sluice check`: a human summary of a validated config. Never prints a key.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::config::Config;

pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config OK");
    let _ = writeln!(out, "listen: {}", config.server.listen);
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
        let _ = writeln!(out, "  {:<24} -> {}", model, list.join(", "));
    }
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
        let _ = writeln!(
            out,
            "  {:<20} org={:<12} models=[{}]",
            key.name,
            key.org.as_deref().unwrap_or("-"),
            models
        );
    }
    out
}
