//! A circuit breaker shared by every Redis caller (limits, budgets, cache).
//! While Redis is down, each request would otherwise wait out the timeout
//! once per store it touches; after `TRIP_AFTER` connection failures in a
//! row, calls fail at once (their callers apply `[redis] on_error`) and one
//! probe every `PROBE_EVERY` finds out whether Redis is back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// Connection failures in a row that open the breaker.
pub const TRIP_AFTER: u32 = 3;

/// How often, while open, one call is let through as a probe.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

pub struct Breaker {
    epoch: Instant,
    failures: AtomicU32,
    /// Until when calls fail at once, in ms since `epoch` plus one; 0 = closed.
    open_until: AtomicU64,
    /// A probe is in flight.
    probing: AtomicBool,
}

/// What the breaker lets a call do.
pub enum Pass<'a> {
    /// Closed: call as usual.
    Call,
    /// Open, and this call is the probe (the slot is freed when it drops).
    Probe { _slot: ProbeSlot<'a> },
}

/// The probe's claim; dropping it (a cancelled call included) frees it.
pub struct ProbeSlot<'a>(&'a AtomicBool);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// `None` while open (fail at once), else how to call.
    pub fn pass(&self) -> Option<Pass<'_>> {
        let open_until = self.open_until.load(Relaxed);
        if open_until == 0 {
            return Some(Pass::Call);
        }
        if self.now_ms() < open_until {
            return None;
        }
        // Claimed before the call's first await: one probe at a time.
        self.probing
            .compare_exchange(false, true, Relaxed, Relaxed)
            .ok()
            .map(|_| Pass::Probe {
                _slot: ProbeSlot(&self.probing),
            })
    }

    pub fn succeeded(&self) {
        self.failures.store(0, Relaxed);
        if self.open_until.swap(0, Relaxed) != 0 {
            tracing::info!("Redis answers again; the store breaker is closed");
        }
    }

    /// A connection failure or timeout (not a command's own error).
    pub fn failed(&self, probe: bool) {
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if probe || failures >= TRIP_AFTER {
            let reopen = self.now_ms() + PROBE_EVERY.as_millis() as u64;
            if self.open_until.swap(reopen, Relaxed) == 0 {
                tracing::warn!(
                    failures,
                    "Redis is failing; the store breaker is open: calls fail at once (on_error applies) while one probe every {PROBE_EVERY:?} checks for recovery"
                );
            }
        }
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_then_probes_one_at_a_time() {
        let breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            assert!(matches!(breaker.pass(), Some(Pass::Call)));
            breaker.failed(false);
        }
        assert!(!breaker.is_open());
        breaker.failed(false);
        assert!(breaker.is_open());
        assert!(breaker.pass().is_none(), "open: fail at once");
        tokio::time::advance(PROBE_EVERY).await;
        let probe = breaker.pass().expect("one probe");
        assert!(matches!(probe, Pass::Probe { .. }));
        assert!(
            breaker.pass().is_none(),
            "a second caller does not probe too"
        );
        drop(probe);
        breaker.failed(true);
        assert!(breaker.pass().is_none(), "a failed probe reopens");
        tokio::time::advance(PROBE_EVERY).await;
        let probe = breaker.pass().expect("next probe");
        breaker.succeeded();
        drop(probe);
        assert!(matches!(breaker.pass(), Some(Pass::Call)), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_frees_its_slot() {
        let breaker = Breaker::default();
        for _ in 0..TRIP_AFTER {
            breaker.failed(false);
        }
        tokio::time::advance(PROBE_EVERY).await;
        drop(breaker.pass());
        assert!(breaker.pass().is_some());
    }
}
