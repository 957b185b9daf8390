//! Single-flight: identical cacheable requests that arrive while the first is
//! still running wait for its answer instead of calling the upstream again.
//! Streamed answers are shared as they arrive: a late joiner gets the chunks
//! already sent, then the rest.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::Notify;

use super::entry::Entry;

#[derive(Clone)]
pub enum End {
    /// The whole answer, recorded.
    Complete(Arc<Entry>),
    /// The leader failed, or its answer cannot be shared.
    Failed,
}

#[derive(Default)]
struct State {
    chunks: Vec<Bytes>,
    end: Option<End>,
}

pub struct Flight {
    /// Whether the leader streams (joiners can follow it live).
    pub streaming: bool,
    state: Mutex<State>,
    changed: Notify,
}

impl Flight {
    pub fn new(streaming: bool) -> Self {
        Self {
            streaming,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    pub fn push(&self, chunk: Bytes) {
        if let Ok(mut state) = self.state.lock() {
            state.chunks.push(chunk);
        }
        self.changed.notify_waiters();
    }

    pub fn finish(&self, end: End) {
        if let Ok(mut state) = self.state.lock() {
            state.end.get_or_insert(end);
        }
        self.changed.notify_waiters();
    }

    /// Waits for the leader's outcome.
    pub async fn end(&self) -> End {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.state.lock().ok().and_then(|state| state.end.clone()) {
                Some(end) => return end,
                None => {
                    if self.state.is_poisoned() {
                        return End::Failed;
                    }
                }
            }
            notified.await;
        }
    }

    /// Waits until the leader has sent its first chunk (`true`) or ended
    /// without one (`false`: answered from the cache, or failed).
    pub async fn first_chunk(&self) -> bool {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.state.lock() {
                Ok(state) if !state.chunks.is_empty() => return true,
                Ok(state) if state.end.is_some() => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
            notified.await;
        }
    }

    /// Chunks from `from` on, waiting for new ones; `None` once none will come.
    async fn next_chunks(&self, from: usize) -> Option<(Vec<Bytes>, bool)> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.lock().ok()?;
                let fresh: Vec<Bytes> = state.chunks.get(from..).unwrap_or_default().to_vec();
                let ended = state.end.is_some();
                if !fresh.is_empty() || ended {
                    let failed = matches!(state.end, Some(End::Failed));
                    return (!fresh.is_empty() || !ended).then_some((fresh, failed && ended));
                }
            }
            notified.await;
        }
    }

    /// The leader's stream as it happens, for a streaming joiner. A leader
    /// that fails mid-way ends the joiner's stream with the same error event
    /// the leader's client got (it is among the chunks).
    pub fn follow(self: Arc<Self>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold((self, 0usize), |(flight, from)| async move {
            let (chunks, _) = flight.next_chunks(from).await?;
            let next = from + chunks.len();
            let joined = chunks.concat();
            Some((Ok(Bytes::from(joined)), (flight, next)))
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests own their tasks")]
mod tests {
    use super::*;
    use crate::engines::cache::entry::Recorded;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn late_joiners_get_earlier_chunks_then_the_rest() {
        let flight = Arc::new(Flight::new(true));
        flight.push(Bytes::from_static(b"a"));
        let follower = tokio::spawn(
            flight
                .clone()
                .follow()
                .map(|c| c.unwrap())
                .collect::<Vec<_>>(),
        );
        tokio::task::yield_now().await;
        flight.push(Bytes::from_static(b"b"));
        flight.finish(End::Complete(Arc::new(Entry::new(
            Recorded::Json {
                body: String::new(),
            },
            std::time::Duration::from_secs(1),
            std::time::Duration::ZERO,
            None,
        ))));
        let got: Vec<u8> = follower.await.unwrap().concat();
        assert_eq!(got, b"ab");
        assert!(matches!(flight.end().await, End::Complete(_)));
    }
}
