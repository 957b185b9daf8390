//! Token usage reported by the upstream, and the hooks through which layers
//! (rate limits now, metering later) learn it once the response is done.
//! For streams that is after the handler returned, so hooks travel with the
//! request instead of being read off the response.

use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::config::Price;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// USD at `price`, cached prompt tokens at the cached rate.
    pub fn cost_at(&self, price: &Price) -> f64 {
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let fresh = self.prompt_tokens - cached;
        let cached_rate = price.cached_input_per_1m.unwrap_or(price.input_per_1m);
        (fresh as f64 * price.input_per_1m
            + cached as f64 * cached_rate
            + self.completion_tokens as f64 * price.output_per_1m)
            / 1_000_000.0
    }
}

/// How a call ended, as far as token usage goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream reported usage.
    Reported(Usage),
    /// The upstream refused or failed before producing output.
    NoOutput,
    /// Output may have been produced but no usage was reported.
    Unknown,
}

/// The model and deployment that served a call and that model's price. The
/// dispatcher sets it once an attempt succeeds, so every observer bills and
/// attributes the same call, fallbacks included.
#[derive(Clone)]
pub struct Served {
    pub model: Arc<str>,
    pub deployment: Arc<str>,
    pub price: Option<Price>,
}

/// What observers learn when a call ends.
pub struct Finished<'a> {
    pub outcome: Outcome,
    /// `None` when no attempt succeeded.
    pub served: Option<&'a Served>,
    /// Reported usage at the serving model's price; 0 when unknown or unpriced.
    pub cost_usd: f64,
}

pub trait UsageObserver: Send + 'static {
    fn finish(self: Box<Self>, finished: &Finished<'_>);
}

/// Observers registered by layers; the dispatcher finishes them once.
#[derive(Clone, Default)]
pub struct UsageHooks(Arc<Mutex<Hooks>>);

#[derive(Default)]
struct Hooks {
    observers: Vec<Box<dyn UsageObserver>>,
    served: Option<Served>,
}

impl UsageHooks {
    pub fn add(&self, observer: Box<dyn UsageObserver>) {
        if let Ok(mut hooks) = self.0.lock() {
            hooks.observers.push(observer);
        }
    }

    pub fn served_by(&self, served: Served) {
        if let Ok(mut hooks) = self.0.lock() {
            hooks.served = Some(served);
        }
    }

    /// Prices the outcome once and tells every observer.
    pub fn finish(&self, outcome: Outcome) {
        let Hooks { observers, served } = match self.0.lock() {
            Ok(mut hooks) => std::mem::take(&mut *hooks),
            Err(_) => return,
        };
        let cost_usd = match (outcome, served.as_ref().and_then(|s| s.price.as_ref())) {
            (Outcome::Reported(usage), Some(price)) => usage.cost_at(price),
            _ => 0.0,
        };
        let finished = Finished {
            outcome,
            served: served.as_ref(),
            cost_usd,
        };
        for observer in observers {
            observer.finish(&finished);
        }
    }
}

/// Chat/completions/embeddings name the fields `prompt_/completion_tokens`,
/// the Responses API `input_/output_tokens`.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(alias = "input_tokens", default)]
    prompt_tokens: u64,
    #[serde(alias = "output_tokens", default)]
    completion_tokens: u64,
    #[serde(alias = "input_tokens_details", default)]
    prompt_tokens_details: Option<CachedDetails>,
}

#[derive(Deserialize)]
struct CachedDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct Carrier {
    #[serde(default)]
    usage: Option<RawUsage>,
    /// Responses API stream events carry it inside `response`.
    #[serde(default)]
    response: Option<Box<Carrier>>,
}

impl From<RawUsage> for Usage {
    fn from(raw: RawUsage) -> Self {
        Self {
            prompt_tokens: raw.prompt_tokens,
            completion_tokens: raw.completion_tokens,
            cached_tokens: raw.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
        }
    }
}

/// A chat stream's final usage chunk (`"choices":[]` with a `usage`
/// object), the one a client that did not ask for usage must not see.
pub fn is_usage_only(event: &[u8]) -> bool {
    memchr::memmem::find(event, b"\"choices\":[]").is_some()
        && memchr::memmem::find(event, b"\"usage\":{").is_some()
}

const USAGE_NULL: [&[u8]; 2] = [b",\"usage\":null", b"\"usage\":null,"];

/// A stream event without the `"usage":null` field that `include_usage`
/// adds to every chunk, for a client that did not ask for it. One pass per
/// pattern, so a line full of them costs no more than its length.
pub fn without_usage_null(event: &[u8]) -> Vec<u8> {
    let mut event = event.to_vec();
    for pattern in USAGE_NULL {
        if memchr::memmem::find(&event, pattern).is_none() {
            continue;
        }
        let mut kept = Vec::with_capacity(event.len());
        let mut from = 0;
        for at in memchr::memmem::find_iter(&event, pattern) {
            kept.extend_from_slice(&event[from..at]);
            from = at + pattern.len();
        }
        kept.extend_from_slice(&event[from..]);
        event = kept;
    }
    event
}

/// Usage from a JSON body or one SSE event's data.
pub fn parse(json: &[u8]) -> Option<Usage> {
    let carrier: Carrier = serde_json::from_slice(json).ok()?;
    match (carrier.usage, carrier.response) {
        (Some(usage), _) => Some(usage.into()),
        (None, Some(response)) => response.usage.map(Usage::from),
        (None, None) => None,
    }
}

/// Finds usage in a relayed SSE stream without parsing every chunk: only a
/// `data:` line containing `"usage":{` is decoded. A line split across chunks
/// is carried to the next one, up to `LINE_LIMIT`; a longer line is skipped
/// (a usage event is a few hundred bytes). Lines end at `\n` or `\r`, and
/// each byte is searched once, so the cost is linear however chunks are cut.
#[derive(Default)]
pub struct StreamUsageScanner {
    /// The start of the current line, while its end has not arrived.
    line: Vec<u8>,
    /// The current line outgrew `LINE_LIMIT`: ignored up to its end.
    skipping: bool,
    found: Option<Usage>,
}

const MARKER: &[u8] = b"\"usage\":{";
const LINE_LIMIT: usize = 256 * 1024;

impl StreamUsageScanner {
    pub fn scan(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if !self.line.is_empty() || self.skipping {
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.hold(rest);
                return;
            };
            if !std::mem::take(&mut self.skipping) {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&rest[..end]);
                self.check(&line);
                line.clear();
                self.line = line;
            }
            rest = &rest[end + 1..];
        }
        // Nothing carried now: without the marker only the unfinished last
        // line can matter (its marker may still come).
        if memchr::memmem::find(rest, MARKER).is_some() {
            while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
                self.check(&rest[..end]);
                rest = &rest[end + 1..];
            }
        } else if let Some(end) = memchr::memrchr2(b'\n', b'\r', rest) {
            rest = &rest[end + 1..];
        }
        self.hold(rest);
    }

    fn check(&mut self, line: &[u8]) {
        if let Some(data) = line.strip_prefix(b"data:")
            && memchr::memmem::find(data, MARKER).is_some()
            && let Some(usage) = parse(data.trim_ascii())
        {
            self.found = Some(usage);
        }
    }

    /// Carries the start of an unfinished line, unless it grew too long.
    fn hold(&mut self, partial: &[u8]) {
        if self.skipping || partial.is_empty() {
            return;
        }
        if self.line.len() + partial.len() > LINE_LIMIT {
            self.line = Vec::new();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(partial);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chat_responses_and_nested_usage() {
        let chat = br#"{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(
            parse(chat),
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 4
            })
        );
        let responses = br#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3,"input_tokens_details":{"cached_tokens":0}}}}"#;
        assert_eq!(parse(responses).map(|u| u.total()), Some(10));
        assert_eq!(parse(br#"{"usage":null}"#), None);
    }

    #[test]
    fn scanner_finds_usage_split_across_chunks() {
        let mut scanner = StreamUsageScanner::default();
        scanner.scan(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n");
        assert_eq!(scanner.usage(), None);
        scanner.scan(b"data: {\"choices\":[],\"usage\":{\"prompt_to");
        scanner.scan(b"kens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(11));
    }

    #[test]
    fn scanner_finds_a_marker_cut_in_two_and_crlf_lines() {
        let mut scanner = StreamUsageScanner::default();
        scanner.scan(b"data: {\"choices\":[],\"us");
        scanner.scan(b"age\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\r\n\r\n");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(3));
    }

    #[test]
    fn scanner_skips_an_endless_line_with_a_bounded_carry() {
        let mut scanner = StreamUsageScanner::default();
        let piece = vec![b'x'; 1000];
        for _ in 0..1000 {
            scanner.scan(&piece);
            assert!(scanner.line.len() <= LINE_LIMIT);
        }
        assert!(scanner.skipping);
        scanner.scan(b"\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4}}\n\n");
        assert_eq!(scanner.usage().map(|u| u.total()), Some(4));
    }

    #[test]
    fn usage_null_is_removed_in_one_pass() {
        let line = b"data: {\"a\":1,\"usage\":null,\"b\":2,\"usage\":null}\n";
        assert_eq!(
            without_usage_null(line),
            b"data: {\"a\":1,\"b\":2}\n".to_vec()
        );
    }
}
