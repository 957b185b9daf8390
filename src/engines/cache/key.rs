//! Which requests are cached, and under what key. The key is an xxh3-128 hash
//! of the tenant scope, the endpoint and the canonical request: every field
//! that changes the output, with object keys sorted; fields that do not
//! (`stream`, `stream_options`, `user`, metadata...) are left out, so a
//! streamed and a non-streamed call share an entry.

use std::io::Write;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::vocab::Endpoint;

/// Fields that do not change what the model answers.
const IGNORED: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub u128);

impl CacheKey {
    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

/// What the cache does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Bypass,
    Use { key: CacheKey, lookup: bool },
}

pub struct Eligibility {
    pub cache_all: bool,
    /// `[models.X] cache`: forces caching on or off for the model.
    pub model_override: Option<bool>,
}

/// `request` is the body's view (`None` when it is not a readable JSON object).
pub fn decide(
    endpoint: Endpoint,
    request: Option<&Map<String, Value>>,
    scope: &str,
    eligibility: &Eligibility,
    headers: &HeaderMap,
) -> Decision {
    let control = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let directive = |name: &str| control.split(',').any(|d| d.trim() == name);
    // Images and audio are neither repeatable nor small; stored-response
    // calls read state that changes.
    let cacheable = matches!(
        endpoint,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Responses
            | Endpoint::Moderations
    );
    if !cacheable || directive("no-store") || eligibility.model_override == Some(false) {
        return Decision::Bypass;
    }
    let Some(request) = request else {
        return Decision::Bypass;
    };
    // Output meant to repeat: temperature 0 or a seed. Embeddings always are.
    let repeatable = endpoint == Endpoint::Embeddings
        || request.get("temperature").and_then(Value::as_f64) == Some(0.0)
        || request.get("seed").is_some_and(|seed| !seed.is_null());
    if !(repeatable || eligibility.cache_all || eligibility.model_override == Some(true)) {
        return Decision::Bypass;
    }
    let mut canonical = Vec::with_capacity(1024);
    let _ = write!(canonical, "{scope}\0{}\0", endpoint.path());
    write_object(
        request
            .iter()
            .filter(|(k, _)| !IGNORED.contains(&k.as_str())),
        &mut canonical,
    );
    Decision::Use {
        key: CacheKey(xxhash_rust::xxh3::xxh3_128(&canonical)),
        lookup: !directive("no-cache"),
    }
}

/// For the semantic cache: the final user message's text, and a hash of
/// everything else (scope, endpoint, model, system prompt, earlier turns,
/// parameters), so only requests that differ in that one message are compared.
pub fn semantic_parts(
    endpoint: Endpoint,
    request: Option<&Map<String, Value>>,
    scope: &str,
) -> Option<(u64, String)> {
    if endpoint != Endpoint::ChatCompletions {
        return None;
    }
    // A copy: the final user message is blanked out of the partition's hash.
    let mut request = request?.clone();
    for field in IGNORED {
        request.remove(*field);
    }
    let messages = request.get_mut("messages")?.as_array_mut()?;
    let last = messages.iter_mut().rev().find(|m| m["role"] == "user")?;
    let text = match last.get("content")? {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    last["content"] = Value::Null;
    let mut canonical = Vec::with_capacity(1024);
    let _ = write!(canonical, "{scope}\0{}\0", endpoint.path());
    write_canonical(&Value::Object(request), &mut canonical);
    Some((xxhash_rust::xxh3::xxh3_64(&canonical), text))
}

/// An object's members with keys sorted, values canonical.
fn write_object<'a>(members: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = members.collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

/// JSON with object keys sorted at every level, whatever map type serde_json
/// was built with.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map.iter(), out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str, scope: &str, cache_all: bool) -> Decision {
        let eligibility = Eligibility {
            cache_all,
            model_override: None,
        };
        decide(
            Endpoint::ChatCompletions,
            Some(&serde_json::from_str(body).unwrap()),
            scope,
            &eligibility,
            &HeaderMap::new(),
        )
    }

    #[test]
    fn order_and_ignored_fields_do_not_change_the_key() {
        let a = key(
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
            "k",
            false,
        );
        let b = key(
            r#"{"messages":[{"content":"hi","role":"user"}],"stream":true,"user":"u","temperature":0,"model":"m"}"#,
            "k",
            false,
        );
        assert_eq!(a, b);
        assert!(matches!(a, Decision::Use { lookup: true, .. }));
        let other_scope = key(
            r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
            "k2",
            false,
        );
        assert_ne!(a, other_scope);
        let other_param = key(
            r#"{"model":"m","temperature":0,"top_p":0.5,"messages":[{"role":"user","content":"hi"}]}"#,
            "k",
            false,
        );
        assert_ne!(a, other_param);
    }

    #[test]
    fn only_repeatable_requests_unless_cache_all() {
        let random = r#"{"model":"m","messages":[]}"#;
        assert_eq!(key(random, "k", false), Decision::Bypass);
        assert!(matches!(key(random, "k", true), Decision::Use { .. }));
        assert!(matches!(
            key(r#"{"model":"m","seed":7,"messages":[]}"#, "k", false),
            Decision::Use { .. }
        ));
        let embeddings = decide(
            Endpoint::Embeddings,
            Some(&serde_json::from_str(r#"{"model":"e","input":"x"}"#).unwrap()),
            "k",
            &Eligibility {
                cache_all: false,
                model_override: None,
            },
            &HeaderMap::new(),
        );
        assert!(matches!(embeddings, Decision::Use { .. }));
    }

    #[test]
    fn cache_control_directives() {
        let body = serde_json::from_str(r#"{"model":"m","temperature":0,"messages":[]}"#).unwrap();
        let body = Some(&body);
        let eligibility = Eligibility {
            cache_all: false,
            model_override: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CACHE_CONTROL, "no-cache".parse().unwrap());
        assert!(matches!(
            decide(Endpoint::ChatCompletions, body, "k", &eligibility, &headers),
            Decision::Use { lookup: false, .. }
        ));
        headers.insert(
            http::header::CACHE_CONTROL,
            "max-age=0, no-store".parse().unwrap(),
        );
        assert_eq!(
            decide(Endpoint::ChatCompletions, body, "k", &eligibility, &headers),
            Decision::Bypass
        );
    }
}
