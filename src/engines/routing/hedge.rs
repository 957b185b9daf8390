//! Hedged requests' live state for one model: its recent times to first
//! token (a ring of the last `RING`, one for streamed answers and one for
//! whole ones, whose first byte is the whole answer) and the hedge budget.
//! Lock-free: every call on a hedged model records into it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::HedgeSettings;

/// Recent starts kept per kind of answer.
const RING: usize = 256;
/// Starts seen before a percentile means anything: until then no hedging.
const MIN_SAMPLES: usize = 20;
/// The budget is kept in millionths of a hedge, so a small share such as
/// 0.01% is kept exactly.
const SCALE: u64 = 1_000_000;
/// At most this many hedges saved up for a burst of slow starts.
const MAX_SAVED: u64 = 10;

pub struct Hedge {
    settings: HedgeSettings,
    /// Millionths of a hedge each call deposits.
    per_call: u64,
    balance: AtomicU64,
    streamed: Samples,
    whole: Samples,
}

impl Hedge {
    pub fn new(settings: HedgeSettings) -> Self {
        Self {
            settings,
            per_call: (settings.budget_percent / 100.0 * SCALE as f64).round() as u64,
            balance: AtomicU64::new(0),
            streamed: Samples::default(),
            whole: Samples::default(),
        }
    }

    pub fn has_settings(&self, settings: &HedgeSettings) -> bool {
        self.settings == *settings
    }

    /// How long a call waits for its first token before it is hedged:
    /// the percentile of recent starts, `None` until enough are known.
    pub fn delay(&self, streamed: bool) -> Option<Duration> {
        self.samples(streamed).percentile(self.settings.percentile)
    }

    /// A call's time to its first token (or a lower bound of it, for a
    /// call cancelled before it started: the tail must stay in view).
    pub fn record(&self, streamed: bool, time: Duration) {
        self.samples(streamed).record(time);
    }

    /// Called once per call: the budget grows by `budget_percent` of a hedge.
    pub fn deposit(&self) {
        let cap = MAX_SAVED * SCALE;
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                Some(balance.saturating_add(self.per_call).min(cap))
            });
    }

    /// Takes one hedge from the budget, if there is one.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                balance.checked_sub(SCALE)
            })
            .is_ok()
    }

    fn samples(&self, streamed: bool) -> &Samples {
        if streamed {
            &self.streamed
        } else {
            &self.whole
        }
    }
}

/// The last `RING` times, in microseconds, written round-robin.
struct Samples {
    ring: [AtomicU32; RING],
    written: AtomicU64,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            ring: std::array::from_fn(|_| AtomicU32::new(0)),
            written: AtomicU64::new(0),
        }
    }
}

impl Samples {
    fn record(&self, time: Duration) {
        let micros = u32::try_from(time.as_micros()).unwrap_or(u32::MAX);
        let at = self.written.fetch_add(1, Ordering::Relaxed) as usize % RING;
        self.ring[at].store(micros, Ordering::Relaxed);
    }

    fn percentile(&self, percentile: f64) -> Option<Duration> {
        let known = (self.written.load(Ordering::Relaxed) as usize).min(RING);
        if known < MIN_SAMPLES {
            return None;
        }
        let mut times = [0u32; RING];
        for (time, slot) in times.iter_mut().zip(&self.ring).take(known) {
            *time = slot.load(Ordering::Relaxed);
        }
        let rank = ((percentile / 100.0) * (known - 1) as f64).round() as usize;
        let (_, at, _) = times[..known].select_nth_unstable(rank.min(known - 1));
        Some(Duration::from_micros(u64::from(*at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hedge(percentile: f64, budget_percent: f64) -> Hedge {
        Hedge::new(HedgeSettings {
            percentile,
            budget_percent,
        })
    }

    #[test]
    fn no_delay_until_enough_starts_are_known() {
        let hedge = hedge(95.0, 5.0);
        for _ in 0..MIN_SAMPLES - 1 {
            hedge.record(true, Duration::from_millis(10));
        }
        assert_eq!(hedge.delay(true), None);
        hedge.record(true, Duration::from_millis(10));
        assert_eq!(hedge.delay(true), Some(Duration::from_millis(10)));
        assert_eq!(hedge.delay(false), None, "whole answers are kept apart");
    }

    #[test]
    fn the_delay_is_the_percentile_of_the_last_starts() {
        let hedge = hedge(90.0, 5.0);
        // An old slow era, then 256 starts of 1..=256 ms: only these count.
        for _ in 0..RING {
            hedge.record(false, Duration::from_secs(5));
        }
        for ms in 1..=RING as u64 {
            hedge.record(false, Duration::from_millis(ms));
        }
        let delay = hedge.delay(false).unwrap();
        assert!(
            (Duration::from_millis(229)..=Duration::from_millis(232)).contains(&delay),
            "{delay:?}"
        );
    }

    #[test]
    fn hedges_stay_within_the_budget_share_of_calls() {
        let hedge = hedge(95.0, 5.0);
        let mut hedges = 0;
        for _ in 0..1000 {
            hedge.deposit();
            hedges += u32::from(hedge.withdraw());
        }
        assert_eq!(hedges, 50);
        assert!(!hedge.withdraw());
    }

    #[test]
    fn no_share_of_calls_is_ever_exceeded() {
        let mut rng = fastrand::Rng::with_seed(23);
        for _ in 0..200 {
            let percent = [0.01, 0.05, 0.15, 1.0, 2.6, 5.0, 12.5, 33.3, 50.0][rng.usize(..9)];
            let hedge = hedge(95.0, percent);
            let (mut calls, mut hedges) = (0u64, 0u64);
            for _ in 0..rng.usize(1..5000) {
                hedge.deposit();
                calls += 1;
                // Late calls come at random, in bursts or not at all.
                if rng.bool() {
                    hedges += u64::from(hedge.withdraw());
                }
                let allowed = (calls as f64 * percent / 100.0 + 1e-9).floor() as u64;
                assert!(
                    hedges <= allowed,
                    "{hedges} hedges for {calls} calls at {percent}%"
                );
            }
        }
    }

    #[test]
    fn savings_are_capped() {
        let hedge = hedge(95.0, 50.0);
        for _ in 0..1000 {
            hedge.deposit();
        }
        let taken = std::iter::from_fn(|| hedge.withdraw().then_some(())).count();
        assert_eq!(taken as u64, MAX_SAVED);
    }
}
