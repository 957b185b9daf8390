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
/// adds to every chunk, for a client that did not ask for it.
pub fn without_usage_null(event: &[u8]) -> Vec<u8> {
    let mut event = event.to_vec();
    for pattern in USAGE_NULL {
        while let Some(at) = memchr::memmem::find(&event, pattern) {
            event.drain(at..at + pattern.len());
        }
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

/// Finds usage in a relayed SSE stream without parsing every chunk: only an
/// event containing `"usage":{` is decoded. Events split across chunks are
/// reassembled (bounded).
#[derive(Default)]
pub struct StreamUsageScanner {
    pending: Vec<u8>,
    found: Option<Usage>,
}

const MARKER: &[u8] = b"\"usage\":{";
const PENDING_LIMIT: usize = 256 * 1024;

impl StreamUsageScanner {
    pub fn scan(&mut self, chunk: &[u8]) {
        if self.pending.is_empty() {
            if memchr::memmem::find(chunk, MARKER).is_none() {
                return;
            }
            let start = line_start(chunk, memchr::memmem::find(chunk, MARKER).unwrap_or(0));
            self.pending.extend_from_slice(&chunk[start..]);
        } else {
            self.pending.extend_from_slice(chunk);
        }
        self.drain_lines();
    }

    fn drain_lines(&mut self) {
        while let Some(end) = memchr::memchr(b'\n', &self.pending) {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some(data) = line.strip_prefix(b"data:")
                && memchr::memmem::find(data, MARKER).is_some()
                && let Some(usage) = parse(data.trim_ascii())
            {
                self.found = Some(usage);
            }
            if memchr::memmem::find(&self.pending, MARKER).is_none() {
                self.pending.clear();
                return;
            }
        }
        if self.pending.len() > PENDING_LIMIT {
            self.pending.clear();
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.found
    }
}

fn line_start(chunk: &[u8], at: usize) -> usize {
    memchr::memrchr(b'\n', &chunk[..at]).map_or(0, |newline| newline + 1)
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
}
