//! What routing knows about a deployment's state: throttling from the
//! upstream's own signals, the last reported headroom, the circuit breaker,
//! requests in flight, and peak-EWMA latency. All atomics except the breaker's
//! per-deployment counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::breaker::{Breaker, Permit, State};
use super::hints;
use crate::config::BreakerConfig;

/// Peak-EWMA decay time constant.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Why a deployment is skipped, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Throttled(Instant),
    NoHeadroom(Instant),
    CircuitOpen(Instant),
}

impl Unusable {
    pub fn until(self) -> Instant {
        match self {
            Self::Throttled(at) | Self::NoHeadroom(at) | Self::CircuitOpen(at) => at,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Throttled(_) => "throttled",
            Self::NoHeadroom(_) => "no_headroom",
            Self::CircuitOpen(_) => "circuit_open",
        }
    }
}

pub struct Health {
    epoch: Instant,
    pub breaker: Breaker,
    /// Milliseconds after `epoch`; 0 = not throttled.
    throttled_until: AtomicU64,
    /// The upstream reported zero remaining until this time (ms after `epoch`).
    exhausted_until: AtomicU64,
    remaining_requests: AtomicI64,
    remaining_tokens: AtomicI64,
    in_flight: AtomicU32,
    /// Peak-EWMA latency in microseconds (f64 bits), and when it was updated.
    ewma_us: AtomicU64,
    ewma_at_ms: AtomicU64,
}

impl Health {
    pub fn new(name: Arc<str>, breaker: BreakerConfig) -> Self {
        Self {
            epoch: Instant::now(),
            breaker: Breaker::new(name, breaker),
            throttled_until: AtomicU64::new(0),
            exhausted_until: AtomicU64::new(0),
            remaining_requests: AtomicI64::new(-1),
            remaining_tokens: AtomicI64::new(-1),
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_at_ms: AtomicU64::new(0),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn instant(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis.saturating_sub(1))
    }

    /// `Ok` when the deployment may take a call now.
    pub fn usable(&self, now: Instant) -> Result<(), Unusable> {
        let now_ms = self.millis(now);
        let throttled = self.throttled_until.load(Ordering::Relaxed);
        if throttled > now_ms {
            return Err(Unusable::Throttled(self.instant(throttled)));
        }
        let exhausted = self.exhausted_until.load(Ordering::Relaxed);
        if exhausted > now_ms {
            return Err(Unusable::NoHeadroom(self.instant(exhausted)));
        }
        match self.breaker.blocked_until(now) {
            Some(until) => Err(Unusable::CircuitOpen(until)),
            None => Ok(()),
        }
    }

    /// Takes the deployment out of rotation until `until` (never shortens).
    pub fn throttle(&self, until: Instant) {
        self.throttled_until
            .fetch_max(self.millis(until), Ordering::Relaxed);
    }

    /// Reads `x-ratelimit-remaining-*` from any upstream response; a reported
    /// zero takes the deployment out until its reset, before it answers 429.
    pub fn observe(&self, headers: &HeaderMap, now: Instant) {
        let requests = hints::remaining(headers, "x-ratelimit-remaining-requests");
        let tokens = hints::remaining(headers, "x-ratelimit-remaining-tokens");
        if let Some(value) = requests {
            self.remaining_requests
                .store(value as i64, Ordering::Relaxed);
        }
        if let Some(value) = tokens {
            self.remaining_tokens.store(value as i64, Ordering::Relaxed);
        }
        if requests == Some(0) || tokens == Some(0) {
            let reset = hints::retry_after(headers).unwrap_or(Duration::from_secs(1));
            self.exhausted_until
                .fetch_max(self.millis(now + reset), Ordering::Relaxed);
        }
    }

    pub fn start(&self, now: Instant) -> Option<Permit> {
        let permit = self.breaker.acquire(now)?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(permit)
    }

    /// Ends a call. `failure: None` means the outcome says nothing about
    /// health (a 429, a client error): the breaker is left as it is.
    pub fn finish(&self, permit: Permit, failure: Option<bool>, latency: Duration, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(failed) = failure {
            self.breaker.record(permit, !failed, now);
        } else if permit == Permit::Trial {
            // A throttled trial neither proves nor disproves recovery.
            self.breaker.record(permit, true, now);
        }
        if failure == Some(false) {
            self.record_latency(latency, now);
        }
    }

    fn record_latency(&self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64() * 1e6;
        let now_ms = self.millis(now);
        let last_ms = self.ewma_at_ms.swap(now_ms, Ordering::Relaxed);
        let _ = self
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let current = f64::from_bits(bits);
                let next = if current == 0.0 || sample > current {
                    sample
                } else {
                    let elapsed = now_ms.saturating_sub(last_ms) as f64 / 1000.0;
                    let weight = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
                    current * weight + sample * (1.0 - weight)
                };
                Some(next.to_bits())
            });
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn ewma_latency(&self) -> Duration {
        Duration::from_secs_f64(f64::from_bits(self.ewma_us.load(Ordering::Relaxed)) / 1e6)
    }

    /// Peak-EWMA load: latency scaled by queueing (linkerd's cost).
    pub fn cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        ewma.max(1.0) * f64::from(self.in_flight() + 1)
    }

    pub fn remaining(&self) -> (Option<u64>, Option<u64>) {
        let read = |cell: &AtomicI64| u64::try_from(cell.load(Ordering::Relaxed)).ok();
        (read(&self.remaining_requests), read(&self.remaining_tokens))
    }

    pub fn breaker_state(&self) -> State {
        self.breaker.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(Arc::from("d"), BreakerConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_lasts_exactly_its_hint() {
        let health = health();
        health.throttle(Instant::now() + Duration::from_secs(5));
        assert!(matches!(
            health.usable(Instant::now()),
            Err(Unusable::Throttled(_))
        ));
        tokio::time::advance(Duration::from_millis(4990)).await;
        assert!(health.usable(Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(health.usable(Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn reported_zero_headroom_skips_until_reset() {
        let health = health();
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "2s".parse().unwrap());
        health.observe(&headers, Instant::now());
        assert!(matches!(
            health.usable(Instant::now()),
            Err(Unusable::NoHeadroom(_))
        ));
        assert_eq!(health.remaining().0, Some(0));
        tokio::time::advance(Duration::from_millis(2010)).await;
        assert!(health.usable(Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let health = health();
        health.record_latency(Duration::from_millis(100), Instant::now());
        health.record_latency(Duration::from_millis(500), Instant::now());
        assert_eq!(health.ewma_latency(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_secs(10)).await;
        health.record_latency(Duration::from_millis(100), Instant::now());
        let decayed = health.ewma_latency().as_millis();
        assert!((240..260).contains(&decayed), "{decayed}");
    }
}
