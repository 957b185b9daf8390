//! The retry budget: retries may add at most `ratio` to a model's request
//! rate, plus `min_per_sec`, so an upstream outage cannot multiply load.
//! A token bucket in one atomic: each request deposits `ratio` of a token,
//! time deposits `min_per_sec`, each retry withdraws one.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Tokens are kept in thousandths.
const SCALE: f64 = 1000.0;

pub struct RetryBudget {
    epoch: Instant,
    ratio: f64,
    min_per_sec: f64,
    cap: f64,
    balance: AtomicU64,
    refilled_ms: AtomicU64,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: f64) -> Self {
        // Up to ten seconds of the floor can be saved up for a burst.
        let cap = (min_per_sec * 10.0).max(1.0) + 100.0 * ratio;
        Self {
            epoch: Instant::now(),
            ratio,
            min_per_sec,
            cap,
            balance: AtomicU64::new((min_per_sec.max(1.0) * SCALE) as u64),
            refilled_ms: AtomicU64::new(0),
        }
    }

    /// Whether this budget was made with these settings.
    pub fn has_settings(&self, ratio: f64, min_per_sec: f64) -> bool {
        self.ratio == ratio && self.min_per_sec == min_per_sec
    }

    /// Called once per client request.
    pub fn deposit(&self) {
        self.add(self.ratio);
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let last = self.refilled_ms.swap(now_ms, Ordering::Relaxed);
        if now_ms > last {
            self.add(self.min_per_sec * (now_ms - last) as f64 / 1000.0);
        }
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                balance.checked_sub(SCALE as u64)
            })
            .is_ok()
    }

    fn add(&self, tokens: f64) {
        let cap = (self.cap * SCALE) as u64;
        let add = (tokens * SCALE) as u64;
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                Some(balance.saturating_add(add).min(cap))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_ratio_plus_floor() {
        let budget = RetryBudget::new(0.2, 1.0);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.withdraw(Instant::now()) {
                retries += 1;
            }
        }
        // 20% of 1000, plus the initial floor token.
        assert!((200..=201).contains(&retries), "{retries}");
        tokio::time::advance(Duration::from_secs(3)).await;
        let extra = (0..10).filter(|_| budget.withdraw(Instant::now())).count();
        assert_eq!(extra, 3, "the floor refills one per second");
    }
}
