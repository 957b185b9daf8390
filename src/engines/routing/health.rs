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
/// The least share of its weight a deployment keeps however little room it
/// reports.
const MIN_HEADROOM: f64 = 0.02;
/// How long remaining counts hold when the upstream gives no reset time:
/// a minute, the window of per-minute quotas.
const HEADROOM_TTL: Duration = Duration::from_secs(60);

/// A reported count as the cells hold it (they use -1 for "none").
fn clip(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

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
    /// `x-ratelimit-limit-*`, or the most remaining ever reported where
    /// the upstream sends no limit (Azure): what `remaining` is a share of.
    limit_requests: AtomicI64,
    limit_tokens: AtomicI64,
    /// When the last remaining counts go stale (their reset, ms after
    /// `epoch`): the quota window has turned and the room is whole again.
    headroom_until: AtomicU64,
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
            limit_requests: AtomicI64::new(-1),
            limit_tokens: AtomicI64::new(-1),
            headroom_until: AtomicU64::new(0),
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
        let pairs = [
            (
                requests,
                "x-ratelimit-limit-requests",
                &self.remaining_requests,
                &self.limit_requests,
            ),
            (
                tokens,
                "x-ratelimit-limit-tokens",
                &self.remaining_tokens,
                &self.limit_tokens,
            ),
        ];
        for (remaining, limit_header, remaining_cell, limit_cell) in pairs {
            let Some(value) = remaining else { continue };
            remaining_cell.store(clip(value), Ordering::Relaxed);
            match hints::remaining(headers, limit_header) {
                Some(limit) => limit_cell.store(clip(limit), Ordering::Relaxed),
                None => _ = limit_cell.fetch_max(clip(value), Ordering::Relaxed),
            };
        }
        if requests.is_some() || tokens.is_some() {
            let reset = hints::reset_hint(headers).unwrap_or(HEADROOM_TTL);
            self.headroom_until
                .store(self.millis(now + reset), Ordering::Relaxed);
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

    /// Ends a call dropped before it finished (its client left): the
    /// in-flight count comes down and a breaker trial is given back, with
    /// no verdict on the deployment.
    pub fn abandon(&self, permit: Permit) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.breaker.release(permit);
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

    /// Peak-EWMA load at `now`: latency scaled by queueing (linkerd's
    /// cost). The latency decays toward zero while the deployment has no
    /// call at all, so a deployment the `latency` strategy stopped choosing (it was
    /// slow once) looks cheaper as time passes and is chosen again, and
    /// its next call measures it: none is starved of the traffic that
    /// measures it.
    pub fn cost(&self, now: Instant) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        let in_flight = self.in_flight();
        // Only an idle deployment decays: one whose calls hang or fail
        // records no latency, and must not look cheaper for it.
        let decayed = match in_flight {
            0 => {
                let idle_ms = self
                    .millis(now)
                    .saturating_sub(self.ewma_at_ms.load(Ordering::Relaxed));
                ewma * (-(idle_ms as f64) / 1000.0 / EWMA_DECAY.as_secs_f64()).exp()
            }
            _ => ewma,
        };
        decayed.max(1.0) * f64::from(in_flight + 1)
    }

    /// The share of its quota the deployment last reported left (the
    /// lower of requests' and tokens'), in `[MIN_HEADROOM, 1]`; 1 when it
    /// reports none or the report's window has reset. Weighted routing
    /// scales the deployment's weight by it, so one near its limit gets
    /// less before it answers 429, and never none: its trickle of calls
    /// brings the next report.
    pub fn headroom(&self, now: Instant) -> f64 {
        if self.headroom_until.load(Ordering::Relaxed) <= self.millis(now) {
            return 1.0;
        }
        let share = |remaining: i64, limit: &AtomicI64| {
            let limit = limit.load(Ordering::Relaxed);
            (remaining >= 0 && limit > 0).then(|| remaining as f64 / limit as f64)
        };
        // Calls in flight were sent after the report's call, so the upstream
        // has counted, or will count, each of them against what it said
        // was left: the report is always that far behind.
        let reported = self.remaining_requests.load(Ordering::Relaxed);
        let left = match reported {
            ..0 => reported,
            _ => (reported - i64::from(self.in_flight())).max(0),
        };
        let requests = share(left, &self.limit_requests);
        let tokens = share(
            self.remaining_tokens.load(Ordering::Relaxed),
            &self.limit_tokens,
        );
        [requests, tokens]
            .into_iter()
            .flatten()
            .fold(1.0, f64::min)
            .clamp(MIN_HEADROOM, 1.0)
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

    #[tokio::test(start_paused = true)]
    async fn headroom_is_the_reported_share_less_calls_in_flight_until_the_reset() {
        let health = health();
        let now = Instant::now();
        assert_eq!(health.headroom(now), 1.0, "nothing reported");
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit-requests", "100".parse().unwrap());
        headers.insert("x-ratelimit-remaining-requests", "40".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "2s".parse().unwrap());
        health.observe(&headers, now);
        assert!((health.headroom(now) - 0.4).abs() < 1e-9);
        let permits: Vec<_> = (0..10).map(|_| health.start(now).unwrap()).collect();
        assert!(
            (health.headroom(now) - 0.3).abs() < 1e-9,
            "ten more will be counted"
        );
        for permit in permits {
            health.finish(permit, None, Duration::ZERO, now);
        }
        // Tokens lower still: the lower share counts; never below the floor.
        headers.insert("x-ratelimit-limit-tokens", "1000".parse().unwrap());
        headers.insert("x-ratelimit-remaining-tokens", "1".parse().unwrap());
        health.observe(&headers, now);
        assert_eq!(health.headroom(now), MIN_HEADROOM);
        assert_eq!(
            health.headroom(now + Duration::from_secs(2)),
            1.0,
            "the window reset"
        );
        // No limit header (Azure): the most ever reported stands in for it.
        let azure = Health::new(Arc::from("azure"), BreakerConfig::default());
        for remaining in ["800", "200"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-ratelimit-remaining-requests", remaining.parse().unwrap());
            azure.observe(&headers, now);
        }
        assert!((azure.headroom(now) - 0.25).abs() < 1e-9);
        assert_eq!(azure.headroom(now + HEADROOM_TTL), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_deployments_cost_decays_so_it_is_measured_again() {
        let (fast, slow) = (health(), health());
        let now = Instant::now();
        for (health, latency) in [(&fast, 50), (&slow, 500)] {
            let permit = health.start(now).unwrap();
            health.finish(permit, Some(false), Duration::from_millis(latency), now);
        }
        assert!(slow.cost(now) > fast.cost(now) * 9.0);
        // The fast one keeps reporting; the slow one gets no call.
        let later = now + Duration::from_secs(30);
        let permit = fast.start(later).unwrap();
        fast.finish(permit, Some(false), Duration::from_millis(50), later);
        assert!(
            slow.cost(later) < fast.cost(later),
            "after 30 s idle it is tried again"
        );
    }
}
