//! Config text as an operator writes it: TOML, `${VAR}` expansion,
//! `SLUICE__` overrides, durations, then validation. A bad file must be a
//! `ConfigError`, never a panic.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sluice::config::load_from_str;

/// The variables the shipped configs name, set to plausible values, plus
/// one override, so seeds load all the way through validation.
static VARS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let secrets = [
        "ASSISTANT_TEAM_KEY",
        "AZURE_EASTUS_KEY",
        "AZURE_OPENAI_KEY",
        "AZURE_OPENAI_KEY_SWEDEN",
        "AZURE_SWEDEN_KEY",
        "AZURE_WESTUS_KEY",
        "OPENAI_API_KEY",
        "SEARCH_SERVICE_KEY",
        "SLUICE_ADMIN_TOKEN",
        "SLUICE_APP_KEY",
    ];
    let mut vars: HashMap<String, String> = secrets
        .iter()
        .map(|name| (name.to_string(), format!("sk-fuzz-{name}")))
        .collect();
    for name in ["NOTEBOOK_KEY_SHA", "SEARCH_TEAM_KEY_SHA"] {
        vars.insert(name.into(), "ab".repeat(32));
    }
    vars.insert("REDIS_URL".into(), "redis://127.0.0.1:6379".into());
    vars.insert("SLUICE__LOG__LEVEL".into(), "info".into());
    vars
});

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = load_from_str(text, "fuzz.toml", &VARS);
    }
});
