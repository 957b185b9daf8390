//! The loaded config as an operator reads it back (`GET /admin/config`):
//! every setting the file and the environment gave, secrets redacted, and a
//! hash that changes whenever any setting (secrets included) does.

use serde_json::Value;

/// Settings whose values are secrets wherever they appear.
const SECRET_FIELDS: [&str; 4] = ["api_key", "key", "token", "key_sha256"];

const REDACTED: &str = "[redacted]";

#[derive(Debug, Default)]
pub struct View {
    /// The settings with secrets replaced by `[redacted]`.
    pub redacted: Value,
    /// Hex SHA-256 of the unredacted settings.
    pub hash: String,
}

impl View {
    pub fn of(tree: Value) -> Self {
        let hash = hex::encode(super::sha256(&tree.to_string()));
        let mut redacted = tree;
        redact(&mut redacted);
        Self { redacted, hash }
    }
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if SECRET_FIELDS.contains(&name.as_str()) && !field.is_null() {
                    *field = Value::from(REDACTED);
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
        }
        _ => {}
    }
}

/// `scheme://user:secret@host/...` with the password redacted; `None` for
/// anything else. Store and webhook URLs carry credentials this way.
fn without_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:{REDACTED}@{host}{tail}"))
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
            "usage": {"store": "postgres://sluice:pw@db/sluice?sslmode=disable"},
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
