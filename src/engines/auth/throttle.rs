//! Failed authentication, throttled per client address. A client that sends
//! wrong keys gets a bucket of `failed_auth_per_minute` failures; once it is
//! empty, every attempt from that address is refused with 429 until the
//! bucket refills (a GCRA: one failure's worth every `60 s / N`), so keys
//! cannot be guessed at line rate. Refusals are counted and their log lines
//! aggregated to one per 10 s, so a flood of bad keys cannot flood the logs.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::infra::telemetry::LogEvery;

/// Addresses remembered at once; the least recently seen are forgotten first.
const MAX_ADDRESSES: u64 = 100_000;

pub struct FailedAuth {
    /// Each address's theoretical arrival time, in ms since `epoch`.
    buckets: moka::sync::Cache<IpAddr, Arc<AtomicU64>>,
    interval_ms: u64,
    /// A full bucket's span: `per_minute` failures.
    burst_ms: u64,
    epoch: Instant,
    /// When the last failure happened (ms since `epoch`, plus one; 0 = never):
    /// while no address failed within a burst span, no lookup is needed.
    last_failure: AtomicU64,
    unlogged: AtomicU64,
    log: LogEvery,
}

impl FailedAuth {
    /// `None` when `per_minute` is 0 (throttling off).
    pub fn new(per_minute: u32) -> Option<Self> {
        let per_minute = u64::from(per_minute);
        (per_minute > 0).then(|| {
            let interval_ms = (60_000 / per_minute).max(1);
            Self {
                buckets: moka::sync::Cache::builder()
                    .max_capacity(MAX_ADDRESSES)
                    .time_to_idle(Duration::from_secs(600))
                    .build(),
                interval_ms,
                burst_ms: interval_ms * per_minute,
                epoch: Instant::now(),
                last_failure: AtomicU64::new(0),
                unlogged: AtomicU64::new(0),
                log: LogEvery::new(Duration::from_secs(10)),
            }
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// How long `address` must wait before its next attempt, if its bucket
    /// is empty.
    pub fn wait(&self, address: IpAddr) -> Option<Duration> {
        let now = self.now_ms();
        let last = self.last_failure.load(Relaxed);
        if last == 0 || now > last + self.burst_ms {
            return None;
        }
        let tat = self.buckets.get(&address)?.load(Relaxed);
        let ahead = tat.saturating_sub(now);
        let allowed = self.burst_ms - self.interval_ms;
        (ahead > allowed).then(|| Duration::from_millis(ahead - allowed))
    }

    /// Counts a failed attempt from `address` against its bucket, and logs
    /// it in the aggregate (`masked` is the presented key, masked).
    pub fn failed(&self, address: IpAddr, reason: &str, masked: &str) {
        let now = self.now_ms();
        self.last_failure.store(now, Relaxed);
        let bucket = self
            .buckets
            .get_with(address, || Arc::new(AtomicU64::new(now)));
        let interval = self.interval_ms;
        let _ = bucket.fetch_update(Relaxed, Relaxed, |tat| Some(tat.max(now) + interval));
        self.log_aggregated(address, reason, masked);
    }

    /// Refusals of an address already throttled are logged in the aggregate
    /// too, without charging its bucket further.
    pub fn log_aggregated(&self, address: IpAddr, reason: &str, masked: &str) {
        let count = self.unlogged.fetch_add(1, Relaxed) + 1;
        if self.log.due() {
            self.unlogged.store(0, Relaxed);
            tracing::warn!(
                count,
                latest_client = %address,
                latest_reason = reason,
                latest_key = masked,
                "refused authentication attempts (one line per 10 s at most)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_address_is_refused_once_its_bucket_is_empty_and_recovers() {
        let throttle = FailedAuth::new(6).unwrap(); // one every 10 s, burst 6
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..6 {
            assert_eq!(throttle.wait(client), None);
            throttle.failed(client, "invalid_key", "****");
        }
        let wait = throttle.wait(client).expect("empty bucket");
        assert!(wait <= Duration::from_secs(10), "{wait:?}");
        assert_eq!(
            throttle.wait(other),
            None,
            "other addresses are not affected"
        );
        tokio::time::advance(wait).await;
        assert_eq!(throttle.wait(client), None, "one attempt's worth refilled");
        throttle.failed(client, "invalid_key", "****");
        assert!(throttle.wait(client).is_some());
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(FailedAuth::new(0).is_none());
    }
}
