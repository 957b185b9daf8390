//! Checks a batch's input file line by line as it streams from disk: each
//! line is a JSON object with a unique `custom_id`, `method: "POST"`, the
//! batch's `url`, a body that is not streamed, and a model this key may use
//! and the gateway serves. Memory grows with the number of `custom_id`s
//! (bounded by `[batch] max_lines`), never with the file.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use tokio::io::AsyncBufReadExt;

use crate::engines::internal::InternalCalls;
use crate::vocab::Identity;

/// Longest line read; a longer one is an error, not a bigger buffer.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Errors listed in the batch object; the rest are counted in the last.
const MAX_LISTED_ERRORS: usize = 100;

/// One input line, as the runner and the validator read it.
#[derive(Deserialize)]
pub struct InputLine<'a> {
    #[serde(borrow)]
    pub custom_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub method: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub url: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// The part of a line's body the checks read.
#[derive(Deserialize)]
struct BodyHead {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// The models a batch's lines name: OpenAI batches use one, and only a
/// one-model batch can be forwarded to a provider's Batch API.
#[derive(Default)]
pub struct Models {
    pub first: Option<String>,
    pub mixed: bool,
}

impl Models {
    fn saw(&mut self, model: String) {
        match &self.first {
            None => self.first = Some(model),
            Some(first) => self.mixed |= *first != model,
        }
    }

    /// The batch's model: `None` when its lines name several.
    pub fn one(self) -> Option<String> {
        if self.mixed { None } else { self.first }
    }
}

/// What validation found.
pub struct Validated {
    /// Lines to run.
    pub total: i64,
    /// The model every line names (the batch object's `model`); `None`
    /// when they name several.
    pub model: Option<String>,
    /// `{code, message, param, line}` objects; empty when the file is good.
    pub errors: Vec<Json>,
}

/// Reads lines of at most `MAX_LINE_BYTES`, each without its line ending
/// (`\n` or `\r\n`): a file from disk, or any buffered reader.
pub struct Lines<R = tokio::io::BufReader<tokio::fs::File>> {
    reader: R,
    buffer: Vec<u8>,
    /// 1-based number of the last line read.
    pub number: usize,
}

/// A line as read: its bytes, or how it was too long.
pub enum Read<'a> {
    Line(&'a [u8]),
    TooLong,
    End,
}

impl Lines {
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(path).await?;
        Ok(Self::new(tokio::io::BufReader::with_capacity(
            64 * 1024,
            file,
        )))
    }
}

impl<R: tokio::io::AsyncBufRead + Unpin> Lines<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buffer: Vec::new(),
            number: 0,
        }
    }

    pub async fn next(&mut self) -> std::io::Result<Read<'_>> {
        self.buffer.clear();
        let mut too_long = false;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.buffer.is_empty() && !too_long {
                    return Ok(Read::End);
                }
                break;
            }
            let (piece, found) = match memchr::memchr(b'\n', available) {
                Some(end) => (&available[..end], Some(end + 1)),
                None => (available, None),
            };
            if !too_long && self.buffer.len() + piece.len() <= MAX_LINE_BYTES {
                self.buffer.extend_from_slice(piece);
            } else {
                too_long = true;
                self.buffer.clear();
            }
            let used = found.unwrap_or(available.len());
            self.reader.consume(used);
            if found.is_some() {
                break;
            }
        }
        self.number += 1;
        if too_long {
            return Ok(Read::TooLong);
        }
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
        }
        Ok(Read::Line(&self.buffer))
    }
}

/// Whether a line holds nothing but whitespace (skipped, not counted).
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Checks the file at `path` for a batch on `endpoint` run as `identity`.
pub async fn validate(
    path: &Path,
    endpoint: &str,
    identity: &Identity,
    internal: &dyn InternalCalls,
    max_lines: usize,
) -> std::io::Result<Validated> {
    let mut lines = Lines::open(path).await?;
    let mut seen = HashSet::new();
    let mut found = Validated {
        total: 0,
        model: None,
        errors: Vec::new(),
    };
    let mut failures = 0usize;
    let mut models = Models::default();
    loop {
        let problem = match lines.next().await? {
            Read::End => break,
            Read::TooLong => Some((
                "line_too_long",
                format!("The line is longer than {MAX_LINE_BYTES} bytes."),
                None,
            )),
            Read::Line(line) if is_blank(line) => continue,
            Read::Line(line) => {
                found.total += 1;
                let usable = |model: &str| internal.serves(model) && identity.may_use(model);
                check_line(line, endpoint, &usable, &mut seen, &mut models)
            }
        };
        if let Some((code, message, param)) = problem {
            failures += 1;
            if found.errors.len() < MAX_LISTED_ERRORS {
                found.errors.push(json!({
                    "code": code, "message": message, "param": param, "line": lines.number,
                }));
            }
        }
        if found.total as usize > max_lines {
            found.errors.push(json!({
                "code": "too_many_requests",
                "message": format!("The file holds more than {max_lines} requests."),
                "param": null, "line": lines.number,
            }));
            return Ok(found);
        }
    }
    if failures > found.errors.len()
        && let Some(last) = found.errors.last_mut()
    {
        last["message"] = json!(format!(
            "{} ({} more errors not listed)",
            last["message"].as_str().unwrap_or_default(),
            failures - MAX_LISTED_ERRORS
        ));
    }
    if found.total == 0 && found.errors.is_empty() {
        found.errors.push(json!({
            "code": "empty_file", "message": "The input file holds no requests.",
            "param": null, "line": null,
        }));
    }
    found.model = models.one();
    Ok(found)
}

/// A line's error: its code, message and the field at fault.
pub type Problem = Option<(&'static str, String, Option<&'static str>)>;

/// Checks one non-blank line; `usable` says whether the gateway serves a
/// model and the key may use it.
pub fn check_line(
    line: &[u8],
    endpoint: &str,
    usable: &dyn Fn(&str) -> bool,
    seen: &mut HashSet<String>,
    models: &mut Models,
) -> Problem {
    let parsed: InputLine<'_> = match serde_json::from_slice(line) {
        Ok(parsed) => parsed,
        Err(error) => {
            return Some((
                "invalid_json_line",
                format!(
                    "The line is not a valid request: {}",
                    crate::util::text::clip(&error.to_string())
                ),
                None,
            ));
        }
    };
    if parsed.custom_id.is_empty() || !seen.insert(parsed.custom_id.clone().into_owned()) {
        return Some((
            "duplicate_custom_id",
            format!(
                "The custom_id `{}` is empty or used by an earlier line.",
                crate::util::text::clip(&parsed.custom_id)
            ),
            Some("custom_id"),
        ));
    }
    if parsed.method != "POST" {
        return Some((
            "invalid_method",
            "The method must be POST.".into(),
            Some("method"),
        ));
    }
    if parsed.url != endpoint {
        return Some((
            "invalid_url",
            format!("The url must be the batch's endpoint, {endpoint}."),
            Some("url"),
        ));
    }
    let head: BodyHead = match serde_json::from_str(parsed.body.get()) {
        Ok(head) => head,
        Err(_) => {
            return Some((
                "invalid_body",
                "The body must be a JSON object.".into(),
                Some("body"),
            ));
        }
    };
    if head.stream == Some(true) {
        return Some((
            "invalid_body",
            "Batch requests cannot be streamed.".into(),
            Some("body.stream"),
        ));
    }
    let Some(model) = head.model else {
        return Some((
            "missing_model",
            "The body names no model.".into(),
            Some("body.model"),
        ));
    };
    if !usable(&model) {
        return Some((
            "model_not_found",
            format!(
                "The model `{}` does not exist or this key may not use it.",
                crate::util::text::clip(&model)
            ),
            Some("body.model"),
        ));
    }
    models.saw(model);
    None
}
