//! Reading and checking a request body. Only the fields the gateway routes by
//! are parsed; the body is forwarded as received.

use std::borrow::Cow;
use std::ops::Range;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::vocab::error::GatewayError;

use crate::util::text::clip;

/// The fields Sluice reads from a request body, kept raw so a value of the
/// wrong type is reported by its field's name (`param`), as OpenAI does,
/// rather than as a serde message about Rust types.
#[derive(Deserialize)]
struct RawHead<'a> {
    /// Its span is also where an Azure path's deployment name goes.
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    /// `audio/speech` streams when `stream_format` is `sse`.
    #[serde(borrow, default)]
    stream_format: Option<&'a RawValue>,
    /// A new response continuing a stored one (Responses API).
    #[serde(borrow, default)]
    previous_response_id: Option<&'a RawValue>,
    /// The conversation a new response belongs to (Responses API): an id,
    /// or an object with one.
    #[serde(borrow, default)]
    conversation: Option<&'a RawValue>,
    /// A chat completion kept upstream (`store: true`).
    #[serde(borrow, default)]
    store: Option<&'a RawValue>,
    /// A Realtime client secret's session, which names the model there.
    #[serde(borrow, default)]
    session: Option<&'a RawValue>,
    /// A malformed value is the upstream's to reject, not a reason to fail
    /// here. An explicit `null` is kept, so the usage splice replaces it
    /// instead of adding a second member.
    #[serde(borrow, default, deserialize_with = "raw_even_if_null")]
    stream_options: Option<&'a RawValue>,
}

fn raw_even_if_null<'de, D>(value: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(value).map(Some)
}

/// A newtype so serde borrows the name from the body (it never borrows
/// through `Option<Cow<str>>`).
#[derive(Deserialize)]
struct ModelName<'a>(#[serde(borrow)] Cow<'a, str>);

pub struct RequestHead<'a> {
    pub model: Cow<'a, str>,
    /// Where the `model` value sits in the body (`None` when it has none).
    pub model_span: Option<Range<usize>>,
    /// The body itself names `model` (an Azure path may name another).
    pub model_in_body: bool,
    pub previous_response_id: Option<Cow<'a, str>>,
    /// The conversation's id (`conversation` as a string or `{"id": ...}`).
    pub conversation: Option<Cow<'a, str>>,
    /// `store: true`: the answer is kept upstream and its id is pinned.
    pub store: bool,
    pub stream: bool,
    /// `stream_options.include_usage` is true.
    pub include_usage: bool,
    /// Where the `stream_options` value sits in the body, for splicing.
    pub stream_options: Option<Range<usize>>,
}

/// Rejects bodies that declare a non-JSON type; a missing type is accepted.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    if is_json(text) {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType {
            got: text.into(),
            expected: "application/json",
        })
    }
}

/// Whether a content type is JSON: `application/json` or `*/*+json`, any parameters.
pub fn is_json(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    mime.eq_ignore_ascii_case("application/json")
        || mime
            .len()
            .checked_sub(5)
            .and_then(|start| mime.get(start..))
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// The boundary of an upload endpoint's `multipart/form-data` body; any
/// other type (or none) is refused, as OpenAI does.
pub fn multipart_boundary(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let text = headers
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or("(not text)"))
        .unwrap_or("none");
    crate::upstream::multipart::boundary(text).ok_or_else(|| GatewayError::UnsupportedMediaType {
        got: text.into(),
        expected: "multipart/form-data with a boundary",
    })
}

/// The head of an upload: `model` and `stream` are form fields.
pub fn multipart_head<'a>(
    body: &'a [u8],
    boundary: &str,
    path_model: Option<&'a str>,
) -> Result<RequestHead<'a>, GatewayError> {
    use crate::upstream::multipart::text_field;
    let field = text_field(body, boundary, "model").filter(|model| !model.is_empty());
    let model = path_model.or(field).ok_or_else(|| {
        GatewayError::invalid("You must provide a model parameter.", Some("model"))
    })?;
    Ok(RequestHead {
        model: Cow::Borrowed(model),
        model_span: None,
        model_in_body: field == Some(model),
        previous_response_id: None,
        conversation: None,
        store: false,
        stream: text_field(body, boundary, "stream") == Some("true"),
        include_usage: false,
        stream_options: None,
    })
}

/// One replacement in a body's bytes: the gateway's edits are spliced into
/// the client's bytes rather than the body re-encoded whole.
pub struct Splice {
    span: Range<usize>,
    insert: Vec<u8>,
}

/// The body with `splices` (which never overlap) applied; at one position
/// they go in the order given.
pub fn apply(body: &[u8], mut splices: Vec<Splice>) -> Vec<u8> {
    splices.sort_by_key(|splice| splice.span.start);
    let added: usize = splices.iter().map(|splice| splice.insert.len()).sum();
    let mut spliced = Vec::with_capacity(body.len() + added);
    let mut at = 0;
    for splice in &splices {
        spliced.extend_from_slice(body.get(at..splice.span.start).unwrap_or_default());
        spliced.extend_from_slice(&splice.insert);
        at = splice.span.end.max(at);
    }
    spliced.extend_from_slice(body.get(at..).unwrap_or_default());
    spliced
}

/// The splice that names `model` (an Azure path's deployment) in the body:
/// its `model` value replaced, or a first member added.
pub fn with_model(body: &[u8], head: &RequestHead<'_>, model: &str) -> Option<Splice> {
    let name = serde_json::to_string(model).ok()?;
    Some(match &head.model_span {
        Some(span) => Splice {
            span: span.clone(),
            insert: name.into_bytes(),
        },
        None => {
            let open = body.iter().position(|b| *b == b'{')? + 1;
            let empty = body[open..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'}');
            let separator = if empty { "" } else { "," };
            Splice {
                span: open..open,
                insert: format!("\"model\":{name}{separator}").into_bytes(),
            }
        }
    })
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
            GatewayError::invalid(
                format!(
                    "Could not read the request body: {}",
                    clip(&error.to_string())
                ),
                None,
            )
        }
    })
}

/// The head of a JSON body. `path_model` is the model an Azure path names:
/// the body may then leave `model` out.
pub fn parse_head<'a>(
    body: &'a [u8],
    path_model: Option<&'a str>,
) -> Result<RequestHead<'a>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::invalid(
            "The request body is empty; send a JSON object.",
            None,
        ));
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(not_an_object(body));
    }
    let head: RawHead<'a> = serde_json::from_slice(body).map_err(|error| unparsable(&error))?;
    let named = match string_field(head.model, "model")? {
        Some(model) => Some(model),
        None => session_model(head.session)?,
    };
    let model_in_body = match (path_model, &named) {
        (Some(path), Some(named)) => path == named,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let model = match (path_model, named) {
        (Some(path), _) => Cow::Borrowed(path),
        (None, Some(model)) if !model.is_empty() => model,
        _ => {
            return Err(GatewayError::invalid(
                "You must provide a model parameter.",
                Some("model"),
            ));
        }
    };
    let sse_format = string_field(head.stream_format, "stream_format")?.is_some_and(|f| f == "sse");
    Ok(RequestHead {
        model,
        model_in_body,
        model_span: head.model.map(|raw| span_in(body, raw.get())),
        previous_response_id: string_field(head.previous_response_id, "previous_response_id")?,
        conversation: conversation_id(head.conversation)?,
        store: bool_field(head.store, "store")?,
        stream: bool_field(head.stream, "stream")? || sse_format,
        include_usage: head.stream_options.is_some_and(asks_for_usage),
        stream_options: head.stream_options.map(|raw| span_in(body, raw.get())),
    })
}

/// A body that is not an object: valid JSON of another type is named by its
/// type; anything else is a parse error.
fn not_an_object(body: &[u8]) -> GatewayError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => GatewayError::InvalidType {
            field: None,
            expected: "an object",
            got: json_type(body.trim_ascii()),
        },
        Err(error) => unparsable(&error),
    }
}

fn unparsable(error: &serde_json::Error) -> GatewayError {
    GatewayError::invalid(
        format!(
            "We could not parse the JSON body of your request ({}). The OpenAI API expects a JSON object.",
            json_error(error)
        ),
        None,
    )
}

/// A string field's value; absent and `null` are `None`.
fn string_field<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Option<Cow<'a, str>>, GatewayError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    serde_json::from_str::<ModelName<'a>>(raw.get())
        .map(|ModelName(value)| Some(value))
        .map_err(|_| mistyped(field, "a string", raw))
}

/// The `model` of a Realtime client secret's `session`, if it names one.
fn session_model(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, GatewayError> {
    #[derive(Deserialize)]
    struct Session<'a> {
        #[serde(borrow, default)]
        model: Option<&'a RawValue>,
    }
    let Some(raw) = raw else {
        return Ok(None);
    };
    match serde_json::from_str::<Session<'_>>(raw.get()) {
        Ok(session) => string_field(session.model, "session.model"),
        Err(_) => Err(mistyped("session", "an object", raw)),
    }
}

/// `conversation`: an id, or an object with one; `null` is none.
fn conversation_id(raw: Option<&RawValue>) -> Result<Option<Cow<'_, str>>, GatewayError> {
    #[derive(Deserialize)]
    struct Conversation<'a> {
        #[serde(borrow)]
        id: ModelName<'a>,
    }
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        return Ok(None);
    };
    if let Ok(ModelName(id)) = serde_json::from_str::<ModelName<'_>>(raw.get()) {
        return Ok(Some(id));
    }
    serde_json::from_str::<Conversation<'_>>(raw.get())
        .map(|conversation| Some(conversation.id.0))
        .map_err(|_| mistyped("conversation", "a string or an object with an id", raw))
}

/// A boolean field's value; absent and `null` are `false`.
fn bool_field(raw: Option<&RawValue>, field: &'static str) -> Result<bool, GatewayError> {
    match raw {
        None => Ok(false),
        Some(raw) => match raw.get() {
            "false" => Ok(false),
            "true" => Ok(true),
            _ => Err(mistyped(field, "a boolean", raw)),
        },
    }
}

fn mistyped(field: &'static str, expected: &'static str, raw: &RawValue) -> GatewayError {
    GatewayError::InvalidType {
        field: Some(field),
        expected,
        got: json_type(raw.get().as_bytes()),
    }
}

/// The JSON type of a valid value, in OpenAI's words ("an integer", "a decimal").
fn json_type(value: &[u8]) -> &'static str {
    match value.first() {
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ if value.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) => "a decimal",
        _ => "an integer",
    }
}

/// Where `part`, a slice serde borrowed from `body`, sits in it.
fn span_in(body: &[u8], part: &str) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    start..start + part.len()
}

/// The splice that sets `stream_options.include_usage = true`, so every
/// stream's usage is metered. A splice rather than a re-encoding: a body
/// nested deeper than a JSON parser allows (a tool schema of 128+ levels) is
/// metered too. `None` when `stream_options` is there but is neither an
/// object nor null (the upstream refuses that request). A new member goes
/// first, ending in a comma: put it before a `model` added at the same place.
pub fn with_usage_requested(body: &[u8], head: &RequestHead<'_>) -> Option<Splice> {
    Some(match &head.stream_options {
        Some(span) => {
            let mut options = match serde_json::from_slice(body.get(span.clone())?).ok()? {
                serde_json::Value::Null => serde_json::Map::new(),
                serde_json::Value::Object(options) => options,
                _ => return None,
            };
            options.insert("include_usage".into(), true.into());
            Splice {
                span: span.clone(),
                insert: serde_json::to_vec(&options).ok()?,
            }
        }
        None => {
            // Right after the object's opening brace; the object has members
            // (`model` at least, or the one an Azure path adds).
            let open = body.iter().position(|b| *b == b'{')? + 1;
            Splice {
                span: open..open,
                insert: br#""stream_options":{"include_usage":true},"#.to_vec(),
            }
        }
    })
}

/// serde's message with any quoted input clipped, keeping its position.
fn json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("{}{position}", clip(message)),
        None => clip(&text).into_owned(),
    }
}

/// What identifies a prompt's cacheable prefix: `prompt_cache_key`, else
/// `user`, else the first KiB of the messages / input / prompt; the first
/// KiB of the body when it is not readable JSON.
const AFFINITY_PREFIX: usize = 1024;

pub fn affinity_key(
    request: Option<&serde_json::Map<String, serde_json::Value>>,
    body: &[u8],
) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    let text = |field: &str| request?.get(field)?.as_str();
    match request {
        Some(_) if text("prompt_cache_key").is_some() => {
            ("key", text("prompt_cache_key")).hash(&mut hasher);
        }
        Some(_) if text("user").is_some() => ("user", text("user")).hash(&mut hasher),
        Some(request) => {
            let mut prefix = Prefix(Vec::with_capacity(AFFINITY_PREFIX));
            if let Some(prompt) = ["messages", "input", "prompt"]
                .iter()
                .find_map(|field| request.get(*field))
            {
                // Stops with an error once the prefix is full.
                let _ = serde_json::to_writer(&mut prefix, prompt);
            }
            prefix.0.hash(&mut hasher);
        }
        None => body[..body.len().min(AFFINITY_PREFIX)].hash(&mut hasher),
    }
    hasher.finish()
}

/// The first `AFFINITY_PREFIX` bytes written to it; a write past them fails.
struct Prefix(Vec<u8>);

impl std::io::Write for Prefix {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = AFFINITY_PREFIX - self.0.len();
        if room == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let taken = room.min(bytes.len());
        self.0.extend_from_slice(&bytes[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
        let head = parse_head(body, None).unwrap();
        assert!(matches!(head.model, Cow::Borrowed("gpt-4o")));
        assert!(head.stream);
        let escaped = parse_head(br#"{"model":"gpt\u002d4o"}"#, None).unwrap();
        assert_eq!(escaped.model, "gpt-4o");
        assert!(!escaped.stream && !escaped.include_usage);
        let asks = parse_head(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            None,
        )
        .unwrap();
        assert!(asks.include_usage);
        // A malformed option is the upstream's to refuse, not a parse error.
        let odd = parse_head(br#"{"model":"m","stream_options":"yes"}"#, None).unwrap();
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
            let err = parse_head(body, None).err().unwrap();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{body:?}");
        }
    }

    /// The spliced body's `stream_options`, parsed back.
    fn spliced_options(body: &str) -> serde_json::Value {
        let head = parse_head(body.as_bytes(), None).unwrap();
        let spliced = apply(
            body.as_bytes(),
            vec![with_usage_requested(body.as_bytes(), &head).unwrap()],
        );
        let value: serde_json::Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(value["model"], "m", "the rest is kept");
        value["stream_options"].clone()
    }

    #[test]
    fn usage_is_requested_by_splicing_whatever_the_spelling() {
        let wanted = serde_json::json!({"include_usage": true});
        assert_eq!(spliced_options(r#"{"model":"m","stream":true}"#), wanted);
        assert_eq!(spliced_options(" \n{ \"model\" : \"m\" }"), wanted);
        assert_eq!(
            spliced_options(r#"{"model":"m","stream_options": null}"#),
            wanted
        );
        assert_eq!(
            spliced_options(
                r#"{"stream_options" : {"include_usage": false, "x": 1}, "model":"m"}"#
            ),
            serde_json::json!({"include_usage": true, "x": 1})
        );
        let odd = r#"{"model":"m","stream_options":"yes"}"#;
        assert!(
            with_usage_requested(odd.as_bytes(), &parse_head(odd.as_bytes(), None).unwrap())
                .is_none()
        );
    }

    #[test]
    fn usage_is_requested_from_bodies_too_deep_to_parse_whole() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        let body = format!(r#"{{"model":"m","stream":true,"tools":{deep}}}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
        let head = parse_head(body.as_bytes(), None).unwrap();
        let spliced = String::from_utf8(apply(
            body.as_bytes(),
            vec![with_usage_requested(body.as_bytes(), &head).unwrap()],
        ))
        .unwrap();
        assert!(spliced.starts_with(r#"{"stream_options":{"include_usage":true},"model":"m""#));
        assert!(spliced.ends_with(&format!("{deep}}}")));
    }

    /// The error's message, param and code.
    fn refusal(body: &str) -> (String, Option<&'static str>, &'static str) {
        let error = parse_head(body.as_bytes(), None).err().unwrap();
        assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{body}");
        let value: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        let code = match value["error"]["code"].as_str() {
            Some("invalid_type") => "invalid_type",
            Some("invalid_request") => "invalid_request",
            other => panic!("{other:?}"),
        };
        let param = match value["error"]["param"].as_str() {
            None => None,
            Some("model") => Some("model"),
            Some("stream") => Some("stream"),
            Some("stream_format") => Some("stream_format"),
            Some("previous_response_id") => Some("previous_response_id"),
            other => panic!("{other:?}"),
        };
        (error.to_string(), param, code)
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_in_openais_words() {
        let mistyped = |body: &str, field: &'static str, message: &str| {
            assert_eq!(
                refusal(body),
                (message.to_owned(), Some(field), "invalid_type"),
                "{body}"
            );
        };
        mistyped(
            r#"{"model":"m","stream":"yes"}"#,
            "stream",
            "Invalid type for 'stream': expected a boolean, but got a string instead.",
        );
        mistyped(
            r#"{"model": 5}"#,
            "model",
            "Invalid type for 'model': expected a string, but got an integer instead.",
        );
        mistyped(
            r#"{"model": [1.5]}"#,
            "model",
            "Invalid type for 'model': expected a string, but got an array instead.",
        );
        mistyped(
            r#"{"model":"m","stream": 1e3}"#,
            "stream",
            "Invalid type for 'stream': expected a boolean, but got a decimal instead.",
        );
        mistyped(
            r#"{"model":"tts","stream_format":{}}"#,
            "stream_format",
            "Invalid type for 'stream_format': expected a string, but got an object instead.",
        );
        mistyped(
            r#"{"model":"m","previous_response_id":false}"#,
            "previous_response_id",
            "Invalid type for 'previous_response_id': expected a string, but got a boolean instead.",
        );
        let (message, param, code) = refusal(" null ");
        assert_eq!(
            message,
            "Invalid type for the request body: expected an object, but got null instead."
        );
        assert_eq!((param, code), (None, "invalid_type"));
        assert!(refusal("[1,2]").0.contains("but got an array instead"));
        // Null is absence, as before.
        let head = parse_head(br#"{"model":"m","stream":null}"#, None).unwrap();
        assert!(!head.stream);
    }

    #[test]
    fn malformed_json_is_a_parse_error_without_rust_names() {
        for body in ["{", "{\"model\":}", "nul", "{\"model\":\"m\"} x", "[1,"] {
            let (message, param, code) = refusal(body);
            assert!(
                message.starts_with("We could not parse the JSON body"),
                "{message}"
            );
            assert_eq!((param, code), (None, "invalid_request"), "{body}");
            for rust in ["struct", "RawHead", "RawValue", "Cow", "Option"] {
                assert!(!message.contains(rust), "{message}");
            }
        }
    }

    #[test]
    fn errors_on_huge_bodies_stay_short() {
        let field = "x".repeat(1 << 20);
        for huge in [
            format!("{{\"{field}\""),
            format!("\"{field}\""),
            format!(r#"{{"model":"{field}","stream":"{field}"}}"#),
        ] {
            let message = parse_head(huge.as_bytes(), None).err().unwrap().to_string();
            assert!(message.len() < 200, "{} bytes", message.len());
        }
    }

    fn affinity(body: &str) -> u64 {
        let request = serde_json::from_str(body).unwrap();
        affinity_key(Some(&request), body.as_bytes())
    }

    #[test]
    fn affinity_prefers_cache_key_then_user_then_prefix() {
        let long = "x".repeat(2000);
        let a = format!(r#"{{"messages":[{{"role":"user","content":"{long}a"}}]}}"#);
        let b =
            format!(r#"{{"messages":[{{"role":"user","content":"{long}b"}}],"temperature":1}}"#);
        assert_eq!(affinity(&a), affinity(&b), "same first KiB");
        let keyed =
            |key: &str| format!(r#"{{"prompt_cache_key":"{key}","user":"u","messages":[]}}"#);
        assert_eq!(affinity(&keyed("k1")), affinity(&keyed("k1")));
        assert_ne!(affinity(&keyed("k1")), affinity(&keyed("k2")));
        let user = |u: &str, text: &str| format!(r#"{{"user":"{u}","input":"{text}"}}"#);
        assert_eq!(affinity(&user("u1", "a")), affinity(&user("u1", "b")));
    }

    #[test]
    fn an_azure_path_names_the_model_in_the_body() {
        let spliced = |body: &str, model: &str| {
            let head = parse_head(body.as_bytes(), Some(model)).unwrap();
            assert_eq!(head.model, model);
            assert!(!head.model_in_body);
            let bytes = apply(
                body.as_bytes(),
                vec![with_model(body.as_bytes(), &head, model).unwrap()],
            );
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let named = spliced(r#"{"model" : "other", "input": "x"}"#, "dep-1");
        assert_eq!(named, serde_json::json!({"model": "dep-1", "input": "x"}));
        let unnamed = spliced(r#" {"input": ["a"]}"#, "dep\"2");
        assert_eq!(
            unnamed,
            serde_json::json!({"model": "dep\"2", "input": ["a"]})
        );
        assert_eq!(spliced("{ }", "d"), serde_json::json!({"model": "d"}));
        // With the usage request added at the same place, in one pass.
        let body = br#"{ }"#;
        let head = parse_head(body, Some("d")).unwrap();
        let both = apply(
            body,
            vec![
                with_usage_requested(body, &head).unwrap(),
                with_model(body, &head, "d").unwrap(),
            ],
        );
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&both).unwrap(),
            serde_json::json!({"model": "d", "stream_options": {"include_usage": true}})
        );
        let body = br#"{"stream_options":null,"model":"x","input":1}"#;
        let head = parse_head(body, Some("dep")).unwrap();
        let both = apply(
            body,
            vec![
                with_usage_requested(body, &head).unwrap(),
                with_model(body, &head, "dep").unwrap(),
            ],
        );
        assert_eq!(
            std::str::from_utf8(&both).unwrap(),
            r#"{"stream_options":{"include_usage":true},"model":"dep","input":1}"#
        );
        let previous = parse_head(br#"{"model":"m","previous_response_id":"resp_1"}"#, None);
        assert_eq!(
            previous.unwrap().previous_response_id.as_deref(),
            Some("resp_1")
        );
        let speech = parse_head(br#"{"model":"tts","stream_format":"sse"}"#, None).unwrap();
        assert!(speech.stream);
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
