//! The configuration reference (`docs/configuration.md`) against the config
//! types: every key its tables name is one the types take, and every key
//! the types take is in its tables. The types are asked through their own
//! deserializer: a probe with an unknown key is refused with the list of
//! the keys the section takes (flattened sections, which serde lists no
//! keys for, are read back from a value serialised whole).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice::config::{KeyConfig, RouteConfig, load_from_str};

const PROBE: &str = "zz_not_a_key";

/// Each `### \`[section]\`` heading of the reference with the keys of the
/// tables under it (the first column, in backticks).
fn reference() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### `").and_then(|h| h.strip_suffix('`')) {
            current = Some(heading.to_owned());
            sections.insert(heading.to_owned(), BTreeSet::new());
            continue;
        }
        if line.starts_with("## ") {
            current = None;
        }
        let (Some(section), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        // The first cell names one key or several (`rpm`, `tpm`).
        let cell = format!("`{}", row.split(" |").next().unwrap());
        let keys = sections.get_mut(section).unwrap();
        keys.extend(cell.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    sections
}

/// A config whose `section` holds `body`: the TOML headers that reach it
/// (a table of an array of tables needs its parent first).
fn probe(section: &str, body: &str) -> String {
    let header = section.replace("NAME", "x").replace("\"MODEL\"", "\"m\"");
    let parent = match header.as_str() {
        "[deployments.mock]" => "[[deployments]]\n",
        "[[auto.tiers]]" => "[auto]\n",
        "[[splits.variants]]" => "[[splits]]\n",
        _ => "",
    };
    format!("{parent}{header}\n{body}\n")
}

fn error_of(toml: &str) -> String {
    match load_from_str(toml, "probe", &HashMap::new()) {
        Ok(_) => String::new(),
        Err(error) => error.to_string(),
    }
}

/// The keys serde says a section takes, from its refusal of `PROBE`.
fn keys_taken(section: &str) -> Option<BTreeSet<String>> {
    let error = error_of(&probe(section, &format!("{PROBE} = 1")));
    assert!(
        error.contains(&format!("unknown field `{PROBE}`")),
        "{section}: the probe was not refused: {error}"
    );
    let expected = error.split(", expected ").nth(1)?;
    let list = expected.split(" for key ").next().unwrap();
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// A flattened section's keys, read back from a value serialised whole.
fn flattened_keys(section: &str) -> BTreeSet<String> {
    let value = match section {
        "[[keys]]" => {
            let key: KeyConfig = toml::from_str("name = \"a\"\nkey = \"sk-a-0000000\"").unwrap();
            serde_json::to_value(key).unwrap()
        }
        "[[routes]]" => {
            let route: RouteConfig = toml::from_str("name = \"r\"\ndefault = \"m\"").unwrap();
            serde_json::to_value(route).unwrap()
        }
        other => panic!("{other} is not a flattened section"),
    };
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_key_in_the_reference_is_one_the_config_takes() {
    let sections = reference();
    assert!(sections.len() > 30, "{sections:?}");
    for (section, keys) in &sections {
        for key in keys {
            let error = error_of(&probe(section, &format!("{key} = \"x\"")));
            assert!(
                !error.contains(&format!("unknown field `{key}`")),
                "{section} {key}: documented but not a config key: {error}"
            );
        }
    }
}

#[test]
fn every_key_the_config_takes_is_in_the_reference() {
    let sections = reference();
    for (section, documented) in &sections {
        let taken = match section.as_str() {
            "[[keys]]" | "[[routes]]" => flattened_keys(section),
            _ => keys_taken(section).expect("the refusal lists the keys"),
        };
        let missing: Vec<&String> = taken.difference(documented).collect();
        assert!(
            missing.is_empty(),
            "{section}: keys the config takes that the reference does not list: {missing:?}"
        );
    }
    // Every top-level section has a heading of its own.
    let top = error_of(&format!("{PROBE} = 1"));
    let expected = top.split(", expected ").nth(1).unwrap();
    for name in expected.split('`').skip(1).step_by(2) {
        let headed = sections.keys().any(|heading| {
            let inner = heading.trim_matches(|c| c == '[' || c == ']');
            inner == name || inner.starts_with(&format!("{name}."))
        });
        assert!(
            headed,
            "the top-level `{name}` has no heading in the reference"
        );
    }
}
