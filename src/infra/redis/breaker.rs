//! A circuit breaker shared by every Redis caller (limits, budgets, cache).
//! While Redis is down, each request would otherwise wait out the timeout
//! once per store it touches; after `TRIP_AFTER` connection failures in a
//! row, calls fail at once (their callers apply `[redis] on_error`).
//!
//! Requests never probe: a burst arriving while the breaker is open would
//! otherwise all fail at once but one, and be admitted unchecked by
//! `fail_open` after Redis is back. A background prober (`SharedRedis`)
//! pings every `PROBE_EVERY` while the breaker is open and closes it as soon
//! as Redis answers, so limits are exact again within a fraction of a second.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Connection failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;

/// How often, while open, the prober asks whether Redis is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

pub struct Breaker {
    epoch: Instant,
    failures: AtomicU32,
    /// When the breaker opened, in ms since `epoch` plus one; 0 = closed.
    opened_at: AtomicU64,
    /// Wakes the prober when the breaker opens.
    opened: Notify,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            opened: Notify::new(),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether a call may go to Redis (`false`: fail at once).
    pub fn is_closed(&self) -> bool {
        self.opened_at.load(Relaxed) == 0
    }

    pub fn succeeded(&self) {
        self.failures.store(0, Relaxed);
        let opened_at = self.opened_at.swap(0, Relaxed);
        if opened_at != 0 {
            let open_ms = self.now_ms().saturating_sub(opened_at);
            tracing::info!(open_ms, "Redis answers again; the store breaker is closed");
        }
    }

    /// A connection failure or timeout (not a command's own error).
    pub fn failed(&self) {
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures >= TRIP_AFTER
            && self
                .opened_at
                .compare_exchange(0, self.now_ms(), Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!(
                failures,
                "Redis is failing; the store breaker is open: calls fail at once (on_error applies) while a probe every {PROBE_EVERY:?} checks for recovery"
            );
            self.opened.notify_one();
        }
    }

    /// Resolves once the breaker has opened (at once if it opened while no
    /// one waited).
    pub async fn wait_open(&self) {
        self.opened.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_wakes_the_prober() {
        let breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            assert!(breaker.is_closed());
            breaker.failed();
        }
        assert!(breaker.is_closed());
        breaker.failed();
        assert!(!breaker.is_closed(), "open: fail at once");
        tokio::time::timeout(Duration::from_millis(1), breaker.wait_open())
            .await
            .expect("the prober is woken even if it was not yet waiting");
        breaker.failed();
        assert!(!breaker.is_closed());
        breaker.succeeded();
        assert!(breaker.is_closed(), "closed again");
        breaker.failed();
        assert!(
            breaker.is_closed(),
            "one failure after a success trips nothing"
        );
    }
}
