//! A per-deployment circuit breaker: closed -> open on `failure_threshold`
//! consecutive failures or a failure rate over `window`; open -> half-open
//! after `recovery_timeout`; half-open lets `half_open_max_calls` trial calls
//! through and closes after `success_threshold` successes (any failure
//! reopens). 429s are throttling, not failures: callers do not report them.
//!
//! The closed-state check is one atomic load; counters and transitions sit
//! behind a per-deployment mutex held for a few instructions.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

struct Counters {
    consecutive_failures: u32,
    window_start: Instant,
    window_calls: u32,
    window_failures: u32,
    opened_at: Instant,
    trials_in_flight: u32,
    trial_successes: u32,
}

pub struct Breaker {
    name: std::sync::Arc<str>,
    config: BreakerConfig,
    state: AtomicU8,
    counters: Mutex<Counters>,
}

/// Whether a call was a half-open trial (its outcome decides the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Normal,
    Trial,
}

impl Breaker {
    pub fn new(name: std::sync::Arc<str>, config: BreakerConfig) -> Self {
        let now = Instant::now();
        Self {
            name,
            config,
            state: AtomicU8::new(State::Closed as u8),
            counters: Mutex::new(Counters {
                consecutive_failures: 0,
                window_start: now,
                window_calls: 0,
                window_failures: 0,
                opened_at: now,
                trials_in_flight: 0,
                trial_successes: 0,
            }),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// When an open breaker will let a trial through; `None` if it would now.
    pub fn blocked_until(&self, now: Instant) -> Option<Instant> {
        match self.state() {
            State::Closed => None,
            State::Open => {
                let until = self.counters.lock().ok()?.opened_at + self.config.recovery_timeout;
                (now < until).then_some(until)
            }
            State::HalfOpen => {
                let counters = self.counters.lock().ok()?;
                (counters.trials_in_flight >= self.config.half_open_max_calls)
                    .then(|| now + Duration::from_millis(50))
            }
        }
    }

    /// Takes a slot for one call, or `None` when the breaker refuses it.
    pub fn acquire(&self, now: Instant) -> Option<Permit> {
        if self.state() == State::Closed {
            return Some(Permit::Normal);
        }
        let mut counters = self.counters.lock().ok()?;
        if self.state() == State::Open {
            if now < counters.opened_at + self.config.recovery_timeout {
                return None;
            }
            self.transition(State::HalfOpen, &mut counters, now);
        }
        match self.state() {
            State::Closed => Some(Permit::Normal),
            State::HalfOpen if counters.trials_in_flight < self.config.half_open_max_calls => {
                counters.trials_in_flight += 1;
                Some(Permit::Trial)
            }
            _ => None,
        }
    }

    /// A call that ended without a verdict (dropped when its client left):
    /// a half-open breaker's trial slot is given back for another call.
    pub fn release(&self, permit: Permit) {
        if permit != Permit::Trial || self.state() != State::HalfOpen {
            return;
        }
        if let Ok(mut counters) = self.counters.lock() {
            counters.trials_in_flight = counters.trials_in_flight.saturating_sub(1);
        }
    }

    pub fn record(&self, permit: Permit, success: bool, now: Instant) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        match (self.state(), permit) {
            (State::HalfOpen, Permit::Trial) => {
                counters.trials_in_flight = counters.trials_in_flight.saturating_sub(1);
                if !success {
                    self.transition(State::Open, &mut counters, now);
                } else {
                    counters.trial_successes += 1;
                    if counters.trial_successes >= self.config.success_threshold {
                        self.transition(State::Closed, &mut counters, now);
                    }
                }
            }
            (State::Closed, _) => {
                self.roll_window(&mut counters, now);
                counters.window_calls += 1;
                if success {
                    counters.consecutive_failures = 0;
                    return;
                }
                counters.consecutive_failures += 1;
                counters.window_failures += 1;
                let rate_tripped = counters.window_calls >= self.config.min_calls
                    && f64::from(counters.window_failures) / f64::from(counters.window_calls)
                        >= self.config.failure_rate;
                if counters.consecutive_failures >= self.config.failure_threshold || rate_tripped {
                    self.transition(State::Open, &mut counters, now);
                }
            }
            // A call that started before the state changed: its result is stale.
            _ => {}
        }
    }

    /// An active health probe's result: only moves an open breaker.
    pub fn record_probe(&self, success: bool, now: Instant) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        if self.state() != State::Open {
            return;
        }
        if success {
            counters.trial_successes += 1;
            if counters.trial_successes >= self.config.success_threshold {
                self.transition(State::Closed, &mut counters, now);
            }
        } else {
            counters.trial_successes = 0;
            counters.opened_at = now;
        }
    }

    fn roll_window(&self, counters: &mut Counters, now: Instant) {
        if now.duration_since(counters.window_start) >= self.config.window {
            counters.window_start = now;
            counters.window_calls = 0;
            counters.window_failures = 0;
        }
    }

    fn transition(&self, to: State, counters: &mut Counters, now: Instant) {
        let from = self.state();
        if from == to {
            return;
        }
        self.state.store(to as u8, Ordering::Release);
        counters.trial_successes = 0;
        counters.trials_in_flight = 0;
        match to {
            State::Open => counters.opened_at = now,
            State::Closed => {
                counters.consecutive_failures = 0;
                counters.window_start = now;
                counters.window_calls = 0;
                counters.window_failures = 0;
            }
            State::HalfOpen => {}
        }
        tracing::warn!(deployment = %self.name, from = from.as_str(), to = to.as_str(), "circuit breaker changed state");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            std::sync::Arc::from("d"),
            BreakerConfig {
                failure_threshold: 3,
                failure_rate: 0.5,
                window: Duration::from_secs(10),
                min_calls: 10,
                recovery_timeout: Duration::from_secs(5),
                half_open_max_calls: 1,
                success_threshold: 2,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures_and_recovers_through_half_open() {
        let breaker = breaker();
        for _ in 0..3 {
            let permit = breaker.acquire(Instant::now()).unwrap();
            breaker.record(permit, false, Instant::now());
        }
        assert_eq!(breaker.state(), State::Open);
        assert!(breaker.acquire(Instant::now()).is_none());
        assert!(breaker.blocked_until(Instant::now()).is_some());

        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = breaker.acquire(Instant::now()).unwrap();
        assert_eq!((trial, breaker.state()), (Permit::Trial, State::HalfOpen));
        assert!(
            breaker.acquire(Instant::now()).is_none(),
            "one trial at a time"
        );
        breaker.record(trial, true, Instant::now());
        let trial = breaker.acquire(Instant::now()).unwrap();
        breaker.record(trial, true, Instant::now());
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.record(Permit::Normal, false, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = breaker.acquire(Instant::now()).unwrap();
        breaker.record(trial, false, Instant::now());
        assert_eq!(breaker.state(), State::Open);
        assert!(
            breaker.acquire(Instant::now()).is_none(),
            "the recovery clock restarted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_within_the_window() {
        let breaker = breaker();
        // Alternating: never 3 in a row, but 50% of 10 calls.
        for i in 0..10 {
            breaker.record(Permit::Normal, i % 2 == 0, Instant::now());
        }
        assert_eq!(breaker.state(), State::Open);

        let fresh = super::tests::breaker();
        for i in 0..8 {
            fresh.record(Permit::Normal, i % 2 == 0, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        fresh.record(Permit::Normal, false, Instant::now());
        fresh.record(Permit::Normal, true, Instant::now());
        assert_eq!(fresh.state(), State::Closed, "old calls left the window");
    }

    #[tokio::test(start_paused = true)]
    async fn probes_close_an_open_breaker() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.record(Permit::Normal, false, Instant::now());
        }
        breaker.record_probe(true, Instant::now());
        assert_eq!(breaker.state(), State::Open);
        breaker.record_probe(true, Instant::now());
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_dropped_without_a_verdict_is_given_back() {
        let breaker = breaker();
        for _ in 0..3 {
            let permit = breaker.acquire(Instant::now()).unwrap();
            breaker.record(permit, false, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let trial = breaker.acquire(Instant::now()).unwrap();
        assert!(
            breaker.acquire(Instant::now()).is_none(),
            "one trial at a time"
        );
        breaker.release(trial);
        assert_eq!(breaker.state(), State::HalfOpen, "no verdict");
        assert_eq!(breaker.acquire(Instant::now()), Some(Permit::Trial));
    }
}
