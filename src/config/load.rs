//! File + environment loading: TOML file, `${VAR}` expansion, then
//! `SLUICE__SECTION__KEY` overrides, then validation.

use std::collections::HashMap;
use std::path::Path;

use config::{Environment, File, FileFormat};

use super::{Config, View, expand, validate};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{0}")]
    Expand(String),
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Invalid(String),
}

/// Loads a config file with the process environment.
pub fn load_from_path(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let vars: HashMap<String, String> = std::env::vars().collect();
    load_from_str(&text, &path.display().to_string(), &vars)
}

/// Loads config text with an explicit environment (tests pass their own).
pub fn load_from_str(
    text: &str,
    origin: &str,
    vars: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut tree: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: e.message().to_owned(),
    })?;
    let lookup = |name: &str| vars.get(name).cloned();
    expand::expand_tree(&mut tree, &mut String::new(), &lookup).map_err(ConfigError::Expand)?;
    let expanded = toml::to_string(&tree).map_err(|e| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;

    let overrides: config::Map<String, String> = vars
        .iter()
        .filter(|(name, _)| name.starts_with("SLUICE__"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let built = config::Config::builder()
        .add_source(File::from_str(&expanded, FileFormat::Toml))
        .add_source(
            Environment::with_prefix("SLUICE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| shape_error(origin, &e))?;
    let tree: serde_json::Value = built
        .clone()
        .try_deserialize()
        .map_err(|e| shape_error(origin, &e))?;
    let mut config: Config = built
        .try_deserialize()
        .map_err(|e| shape_error(origin, &e))?;
    config.view = std::sync::Arc::new(View::of(tree));
    config.otel.apply_env(vars);
    validate::validate(&config).map_err(ConfigError::Invalid)?;
    Ok(config)
}

fn shape_error(origin: &str, error: &config::ConfigError) -> ConfigError {
    ConfigError::Shape(format!("{origin}: {}", dotted_paths(&error.to_string())))
}

/// The config crate writes `deployments[1]weight`; the rest of Sluice (and
/// every user) writes `deployments[1].weight`.
fn dotted_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 4);
    let mut previous = ' ';
    for c in message.chars() {
        if previous == ']' && (c.is_alphanumeric() || c == '_') {
            out.push('.');
        }
        out.push(c);
        previous = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_their_dots() {
        assert_eq!(
            dotted_paths("missing field \"deployments[0]name\" in x[1][2]"),
            "missing field \"deployments[0].name\" in x[1][2]"
        );
    }
}
