//! One parsed view of a request body, made by the request layer and shared by
//! every stage that reads the body (policies, cache key, semantic cache, rate
//! limits' TPM estimate, the ledger's estimate), so a call's body is parsed
//! once and its prompt tokenized at most once per encoding. Large bodies are
//! parsed and tokenized on the blocking pool: tokenizing a long prompt takes
//! milliseconds, which an async worker thread must not spend.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{self as tokens, Encoding};
use crate::vocab::Endpoint;

/// Bodies larger than this are parsed and tokenized off the async threads
/// (tokenizing 32 KiB of text takes about a millisecond).
const OFF_THREAD_BYTES: usize = 32 * 1024;

/// How long a stage waits for a parse or a count on the blocking pool. A
/// body is capped by `max_body_bytes`, so this is only reached when the pool
/// is saturated; the stage then goes on as if the body were unreadable
/// (estimated from its size), rather than wait without end.
const OFF_THREAD_DEADLINE: Duration = Duration::from_secs(10);

pub struct BodyView {
    endpoint: Endpoint,
    /// The body's size, for the size estimate of a body that does not parse.
    size: usize,
    /// A small JSON body not parsed yet: parsed on the first read, so a
    /// call no stage reads (plain proxying) is never parsed at all.
    source: Option<Bytes>,
    /// The body as a JSON object; `None` for uploads, stored-response calls
    /// and bodies the parser refuses (nested deeper than it allows).
    json: OnceLock<Option<Map<String, Value>>>,
    /// The prompt's tokens, by encoding (see `slot`), counted on first use.
    counts: [OnceLock<u64>; 2],
}

impl BodyView {
    /// A JSON body's view: a large one is parsed now, on the blocking pool;
    /// a small one when a stage first reads it.
    pub async fn read(endpoint: Endpoint, body: &Bytes) -> Arc<Self> {
        let size = body.len();
        if size <= OFF_THREAD_BYTES {
            let mut view = Self::with(endpoint, size, None);
            view.json = OnceLock::new();
            view.source = Some(body.clone());
            return Arc::new(view);
        }
        let body = body.clone();
        let json = off_thread(move || parse(&body)).await.flatten();
        Arc::new(Self::with(endpoint, size, json))
    }

    /// A body that is not JSON (an upload) or is empty (a stored-response call).
    pub fn opaque(endpoint: Endpoint, size: usize) -> Arc<Self> {
        Arc::new(Self::with(endpoint, size, None))
    }

    /// A body the gateway wrote from `json` (a policy changed it): nothing
    /// to parse again.
    pub fn written(endpoint: Endpoint, size: usize, json: Map<String, Value>) -> Arc<Self> {
        Arc::new(Self::with(endpoint, size, Some(json)))
    }

    /// Parses in place, for unit tests of the stages that read a view.
    #[cfg(test)]
    pub fn parsed_now(endpoint: Endpoint, body: &[u8]) -> Arc<Self> {
        Arc::new(Self::with(endpoint, body.len(), parse(body)))
    }

    fn with(endpoint: Endpoint, size: usize, json: Option<Map<String, Value>>) -> Self {
        Self {
            endpoint,
            size,
            source: None,
            json: OnceLock::from(json),
            counts: [OnceLock::new(), OnceLock::new()],
        }
    }

    pub fn json(&self) -> Option<&Map<String, Value>> {
        self.json
            .get_or_init(|| self.source.as_deref().and_then(parse))
            .as_ref()
    }

    /// The prompt's tokens in `encoding`, counted once per call: on the
    /// blocking pool for a large body, awaited up to a deadline (past it,
    /// the size estimate, which errs high).
    pub async fn prompt_tokens(self: &Arc<Self>, encoding: Encoding) -> u64 {
        if let Some(count) = self.counts[slot(encoding)].get() {
            return *count;
        }
        if self.size <= OFF_THREAD_BYTES {
            return self.prompt_tokens_now(encoding);
        }
        let view = self.clone();
        off_thread(move || view.prompt_tokens_now(encoding))
            .await
            .unwrap_or_else(|| tokens::size_estimate(self.size))
    }

    /// The same, counted on this thread: for callers already on the
    /// blocking pool, and small bodies.
    pub fn prompt_tokens_now(&self, encoding: Encoding) -> u64 {
        *self.counts[slot(encoding)].get_or_init(|| {
            if self.endpoint.takes_multipart() || self.endpoint == Endpoint::Stored {
                return 0;
            }
            match self.json() {
                Some(request) => tokens::prompt_tokens(self.endpoint, request, encoding),
                // A body the gateway forwards is never free.
                None => tokens::size_estimate(self.size),
            }
        })
    }
}

fn parse(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(request)) => Some(request),
        _ => None,
    }
}

fn slot(encoding: Encoding) -> usize {
    match encoding {
        Encoding::O200k => 0,
        Encoding::Cl100k => 1,
    }
}

/// Runs `work` on the blocking pool; `None` past the deadline (the work
/// finishes unobserved) or if it panicked. Owned by the call that awaits
/// it, which shutdown drains; the work is bounded by `max_body_bytes`.
#[allow(
    clippy::disallowed_methods,
    reason = "awaited in place by the call that needs it, which shutdown drains"
)]
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::time::timeout(OFF_THREAD_DEADLINE, tokio::task::spawn_blocking(work))
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests own their tasks")]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn chat(text: &str) -> Bytes {
        Bytes::from(
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]})
                .to_string(),
        )
    }

    #[tokio::test]
    async fn a_prompt_is_counted_once_per_encoding_and_as_before() {
        let body = chat("Hello world");
        let view = BodyView::read(Endpoint::ChatCompletions, &body).await;
        // 3 (message) + 1 (role) + 2 (content) + 3 (reply).
        assert_eq!(view.prompt_tokens(Encoding::O200k).await, 9);
        assert_eq!(view.counts[slot(Encoding::O200k)].get(), Some(&9));
        assert!(view.counts[slot(Encoding::Cl100k)].get().is_none());
        assert_eq!(view.prompt_tokens_now(Encoding::Cl100k), 9);
        assert_eq!(view.json().unwrap()["model"], "m");
    }

    #[tokio::test]
    async fn unreadable_bodies_and_uploads() {
        let deep = format!(
            r#"{{"model":"m","messages":[],"tools":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let view = BodyView::read(Endpoint::ChatCompletions, &Bytes::from(deep.clone())).await;
        assert!(view.json().is_none());
        assert_eq!(
            view.prompt_tokens(Encoding::O200k).await,
            tokens::size_estimate(deep.len())
        );
        let upload = BodyView::opaque(Endpoint::AudioTranscriptions, 1 << 20);
        assert_eq!(upload.prompt_tokens(Encoding::O200k).await, 0);
    }

    /// A large prompt is parsed and tokenized on the blocking pool: on a
    /// single-threaded runtime, another task runs while it is counted (were
    /// it counted in place, that task could never run before it finished).
    /// On a loaded machine the pool may finish before the runtime looks
    /// again, so a few tries are allowed; work done in place fails them all.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_prompt_is_parsed_and_tokenized_off_the_async_thread() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        let body = chat(&"lorem ipsum dolor sit amet ".repeat(8 * 1024));
        let (mut parse_yielded, mut count_yielded) = (false, false);
        for _ in 0..5 {
            let before = ticks.load(Ordering::Relaxed);
            let view = BodyView::read(Endpoint::ChatCompletions, &body).await;
            let parsed = ticks.load(Ordering::Relaxed);
            parse_yielded |= parsed > before;
            let count = view.prompt_tokens(Encoding::O200k).await;
            count_yielded |= ticks.load(Ordering::Relaxed) > parsed;
            assert!(count > 8 * 1024 * 4, "{count}");
            assert_eq!(view.prompt_tokens_now(Encoding::O200k), count, "cached");
            if parse_yielded && count_yielded {
                break;
            }
        }
        ticker.abort();
        assert!(parse_yielded, "the parse let the runtime run");
        assert!(count_yielded, "so did the count");
    }
}
