//! Reading and checking a request body. Only the fields the gateway routes by
//! are parsed; the body is forwarded as received.

use std::borrow::Cow;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use serde::Deserialize;

use crate::error::GatewayError;

/// The fields Sluice reads from a request body.
#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow, default)]
    model: Option<ModelName<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    /// Kept raw: a malformed value is the upstream's to reject, not a reason
    /// to fail the whole parse here.
    #[serde(borrow, default)]
    stream_options: Option<&'a serde_json::value::RawValue>,
}

/// A newtype so serde borrows the name from the body (it never borrows
/// through `Option<Cow<str>>`).
#[derive(Deserialize)]
struct ModelName<'a>(#[serde(borrow)] Cow<'a, str>);

pub struct RequestHead<'a> {
    pub model: Cow<'a, str>,
    pub stream: bool,
    /// `stream_options.include_usage` is true.
    pub include_usage: bool,
}

/// Rejects bodies that declare a non-JSON type; a missing type is accepted.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let mime = text.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
    {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType(text.to_owned()))
    }
}

pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
        if too_large {
            GatewayError::PayloadTooLarge { limit }
        } else {
            GatewayError::invalid(format!("Could not read the request body: {error}"), None)
        }
    })
}

pub fn parse_head(body: &[u8]) -> Result<RequestHead<'_>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid(
            "The request body is empty; send a JSON object.",
            None,
        ));
    }
    let unparsable = |error: serde_json::Error| {
        GatewayError::invalid(
            format!(
                "We could not parse the JSON body of your request ({error}). The OpenAI API expects a JSON object."
            ),
            None,
        )
    };
    serde_json::from_slice::<Strict>(body).map_err(unparsable)?;
    let head: RawHead<'_> = serde_json::from_slice(body).map_err(unparsable)?;
    match head.model {
        Some(ModelName(model)) if !model.is_empty() => Ok(RequestHead {
            model,
            stream: head.stream.unwrap_or(false),
            include_usage: head.stream_options.is_some_and(asks_for_usage),
        }),
        _ => Err(GatewayError::invalid(
            "You must provide a model parameter.",
            Some("model"),
        )),
    }
}

/// A whole JSON document walked the way a full parse walks it (every
/// string's escapes and UTF-8, number ranges, serde_json's nesting limit of
/// 127) without building it. The head parse skips unread fields leniently,
/// so a body could pass it and then fail every full parse after it: the TPM
/// estimate (read as 0 tokens) and the `include_usage` injection.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Strict)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Strict;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(Strict)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        while map.next_entry::<Strict, Strict>()?.is_some() {}
        Ok(Strict)
    }
}

/// What identifies a prompt's cacheable prefix: `prompt_cache_key`, else
/// `user`, else the first KiB of the messages / input / prompt as sent.
#[derive(Deserialize)]
struct AffinityFields<'a> {
    #[serde(borrow, default)]
    prompt_cache_key: Option<ModelName<'a>>,
    #[serde(borrow, default)]
    user: Option<ModelName<'a>>,
    #[serde(borrow, default)]
    messages: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a serde_json::value::RawValue>,
}

const AFFINITY_PREFIX: usize = 1024;

pub fn affinity_key(body: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    match serde_json::from_slice::<AffinityFields<'_>>(body) {
        Ok(fields) => {
            if let Some(ModelName(key)) = fields.prompt_cache_key {
                ("key", key.as_ref()).hash(&mut hasher);
            } else if let Some(ModelName(user)) = fields.user {
                ("user", user.as_ref()).hash(&mut hasher);
            } else {
                let raw = fields
                    .messages
                    .or(fields.input)
                    .or(fields.prompt)
                    .map_or("", |r| r.get());
                let end = raw.len().min(AFFINITY_PREFIX);
                raw.as_bytes()[..end].hash(&mut hasher);
            }
        }
        Err(_) => body[..body.len().min(AFFINITY_PREFIX)].hash(&mut hasher),
    }
    hasher.finish()
}

/// Whether a streamed request asked for the usage chunk.
fn asks_for_usage(stream_options: &serde_json::value::RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        #[serde(default)]
        include_usage: bool,
    }
    serde_json::from_str::<StreamOptions>(stream_options.get()).is_ok_and(|o| o.include_usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_and_stream_ignoring_the_rest() {
        let body =
            br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true}"#;
        let head = parse_head(body).unwrap();
        assert!(matches!(head.model, Cow::Borrowed("gpt-4o")));
        assert!(head.stream);
        let escaped = parse_head(br#"{"model":"gpt\u002d4o"}"#).unwrap();
        assert_eq!(escaped.model, "gpt-4o");
        assert!(!escaped.stream && !escaped.include_usage);
        let asks =
            parse_head(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
                .unwrap();
        assert!(asks.include_usage);
        // A malformed option is the upstream's to refuse, not a parse error.
        let odd = parse_head(br#"{"model":"m","stream_options":"yes"}"#).unwrap();
        assert!(!odd.include_usage);
    }

    #[test]
    fn rejects_bad_bodies_with_openai_errors() {
        for body in [
            &b""[..],
            b"{",
            b"[1,2]",
            b"{\"model\": 5}",
            b"{\"stream\": true}",
        ] {
            let err = parse_head(body).err().unwrap();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    /// Each body passes a lenient skip of unread fields but fails a full
    /// parse: too deep (serde_json's limit is 127 levels), invalid UTF-8, a
    /// lone surrogate escape, a number out of range.
    #[test]
    fn refuses_what_a_full_parse_would_refuse() {
        let nested = |depth: usize| {
            format!(
                r#"{{"model":"m","x":"[{{\"","y":{}{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        assert!(parse_head(nested(127).as_bytes()).is_ok());
        let bodies = [
            nested(128).into_bytes(),
            b"{\"model\":\"m\",\"messages\":[{\"ro\xffle\":\"user\"}]}".to_vec(),
            br#"{"model":"m","messages":[{"content":"x\udf21"}]}"#.to_vec(),
            br#"{"model":"m","temperature":1e999}"#.to_vec(),
        ];
        for body in bodies {
            assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
            let err = parse_head(&body).err().unwrap();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn affinity_prefers_cache_key_then_user_then_prefix() {
        let long = "x".repeat(2000);
        let a = format!(r#"{{"messages":[{{"role":"user","content":"{long}a"}}]}}"#);
        let b =
            format!(r#"{{"messages":[{{"role":"user","content":"{long}b"}}],"temperature":1}}"#);
        assert_eq!(
            affinity_key(a.as_bytes()),
            affinity_key(b.as_bytes()),
            "same first KiB"
        );
        let keyed =
            |key: &str| format!(r#"{{"prompt_cache_key":"{key}","user":"u","messages":[]}}"#);
        assert_eq!(
            affinity_key(keyed("k1").as_bytes()),
            affinity_key(keyed("k1").as_bytes())
        );
        assert_ne!(
            affinity_key(keyed("k1").as_bytes()),
            affinity_key(keyed("k2").as_bytes())
        );
        let user = |u: &str, text: &str| format!(r#"{{"user":"{u}","input":"{text}"}}"#);
        assert_eq!(
            affinity_key(user("u1", "a").as_bytes()),
            affinity_key(user("u1", "b").as_bytes())
        );
    }

    #[test]
    fn content_type_rules() {
        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(check_content_type(&headers).is_err());
    }
}
