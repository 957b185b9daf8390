//! The loaded config as an operator reads it back (`GET /admin/config`):
//! every setting the file and the environment gave, secrets redacted, and a
//! hash that changes whenever any setting (secrets included) does.

use std::collections::BTreeMap;

use serde_json::Value;

/// Settings whose values are secrets wherever they appear.
/// (`headers`: `[otel] headers` carry a hosted backend's API key.)
const SECRET_FIELDS: [&str; 5] = ["api_key", "key", "token", "key_sha256", "headers"];

/// URL settings whose path is a credential too (a chat webhook's path is
/// its secret): only the scheme and host are shown.
const SECRET_PATH_FIELDS: [&str; 1] = ["webhook_url"];

const REDACTED: &str = "[redacted]";

#[derive(Debug, Default)]
pub struct View {
    /// The settings with secrets replaced by `[redacted]`.
    pub redacted: Value,
    /// Hex SHA-256 of the unredacted settings.
    pub hash: String,
    /// The same, per top-level section: what a reload compares to tell
    /// which restart-only sections changed (a rotated password included).
    pub sections: BTreeMap<String, String>,
}

impl View {
    pub fn of(tree: Value) -> Self {
        let hash = hex::encode(super::sha256(&tree.to_string()));
        let sections = tree.as_object().map_or_else(BTreeMap::new, |fields| {
            fields
                .iter()
                .map(|(name, value)| (name.clone(), hex::encode(super::sha256(&value.to_string()))))
                .collect()
        });
        let mut redacted = tree;
        redact(&mut redacted);
        Self {
            redacted,
            hash,
            sections,
        }
    }
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if field.is_null() {
                    continue;
                }
                if SECRET_FIELDS.contains(&name.as_str()) {
                    *field = Value::from(REDACTED);
                } else if let (true, Value::String(url)) =
                    (SECRET_PATH_FIELDS.contains(&name.as_str()), &*field)
                {
                    let url = without_password(url).unwrap_or_else(|| url.clone());
                    *field = Value::from(origin_only(&url));
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => {
            if let Some(clean) = without_password(text) {
                *text = clean;
            }
            if let Some(clean) = without_query_values(text) {
                *text = clean;
            }
        }
        _ => {}
    }
}

/// A setting's text as an error message may quote it: a URL's password and
/// query values redacted, and clipped.
pub fn redacted_text(text: &str) -> String {
    let text = without_password(text).unwrap_or_else(|| text.to_owned());
    let text = without_query_values(&text).unwrap_or(text);
    crate::util::text::clip(&text).to_string()
}

/// `scheme://host/[redacted]` for a URL with a path or query; the text
/// itself otherwise.
fn origin_only(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return REDACTED.to_owned();
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..host_end]
        .rsplit_once('@')
        .map_or(&rest[..host_end], |(_, host)| host);
    if host_end == rest.len() {
        return format!("{scheme}://{host}");
    }
    format!("{scheme}://{host}/{REDACTED}")
}

/// A URL's query with every value redacted (`?sslpassword=...&sslmode=...`
/// keeps the names); `None` without a query.
fn without_query_values(text: &str) -> Option<String> {
    if !text.contains("://") {
        return None;
    }
    let (base, query) = text.split_once('?')?;
    let (query, fragment) = query
        .split_once('#')
        .map_or((query, None), |(q, f)| (q, Some(f)));
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            None => pair.to_owned(),
        })
        .collect();
    let fragment = fragment.map_or(String::new(), |f| format!("#{f}"));
    Some(format!("{base}?{}{fragment}", redacted.join("&")))
}

/// `scheme://user:secret@host/...` with the password redacted; `None` for
/// anything else. Store and webhook URLs carry credentials this way. The
/// user part ends at the first `@`, as PostgreSQL's URL parsers read it, so
/// a password with a raw `/`, `?` or `#` in it is redacted whole.
fn without_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let (userinfo, host_and_path) = rest.split_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    if user.contains(['/', '?', '#']) {
        // The `@` is in the path or query, not after a user.
        return None;
    }
    Some(format!("{scheme}://{user}:{REDACTED}@{host_and_path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_and_url_passwords_are_redacted_but_change_the_hash() {
        let tree = json!({
            "admin": {"token": "admin-secret"},
            "deployments": [{"name": "a", "api_key": "sk-upstream", "base_url": "https://api.example.com/v1"}],
            "keys": [{"name": "team", "key": "sk-team-secret"}],
            "redis": {"url": "redis://default:hunter2@cache:6379/0"},
            "usage": {"store": "postgres://sluice:pw@db/sluice?sslmode=disable&password=pw2"},
            "alerts": {"webhook_url": "https://hook:pa/ss@hooks.example.com/services/T0/B0/s3cr3t"},
            "cache": {"semantic": {"postgres_url": "postgres://u:pa/ss?x#y@db/x"}},
        });
        let view = View::of(tree.clone());
        let text = view.redacted.to_string();
        for secret in [
            "admin-secret",
            "sk-upstream",
            "sk-team-secret",
            "hunter2",
            ":pw@",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(
            view.redacted["redis"]["url"],
            "redis://default:[redacted]@cache:6379/0"
        );
        assert_eq!(
            view.redacted["deployments"][0]["base_url"],
            "https://api.example.com/v1"
        );
        let mut changed = tree;
        changed["keys"][0]["key"] = json!("sk-team-other");
        assert_ne!(View::of(changed).hash, view.hash);
    }
}
