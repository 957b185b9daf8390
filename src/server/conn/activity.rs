//! What one connection is doing, for its watchdog: requests in flight, when
//! it last went idle, and whether the next request's head has begun.
//!
//! hyper's own HTTP/1 `header_read_timeout` starts when a connection goes
//! idle, so it also caps keep-alive idleness, and HTTP/2 has no idle timeout
//! at all; this state lets one watchdog tell "slow head" from "idle" on both.
//! Atomics only: the state belongs to one connection (its task and its
//! HTTP/2 stream tasks), so there is nothing to lock. Requests never wake
//! the watchdog: it checks back on its own (see `next_check`), so the hot
//! path pays no wake-up and no timer reset per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// The connection deadlines, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Why a connection's deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// A request head was begun (or the connection opened) and not finished.
    Head,
    /// No request in flight and none begun.
    Idle,
}

pub struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// A request has begun; before the first, the accept starts the head timer.
    served: AtomicBool,
    http2: AtomicBool,
    /// Milliseconds after `opened` when the last request ended.
    idle_since: AtomicU64,
    /// Milliseconds after `opened`, plus one, of the first byte read while
    /// idle; 0 while none has been.
    head_started: AtomicU64,
}

/// What the watchdog does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Look again at this time (a deadline, or a check-back).
    At(Instant),
    /// The deadline has passed.
    Expired(Expiry),
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Called for every read that returned bytes: cheap unless it is the
    /// first byte of a new request on an idle connection.
    pub fn on_read(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_started.load(Relaxed) == 0 {
            self.head_started.store(self.now_ms() + 1, Relaxed);
        }
    }

    /// A request's head is complete; it is in flight until the returned
    /// guard drops (with its response body).
    pub fn begin(self: &Arc<Self>, version: http::Version) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.served.store(true, Relaxed);
        self.http2.store(version == http::Version::HTTP_2, Relaxed);
        self.head_started.store(0, Relaxed);
        InFlight(self.clone())
    }

    pub fn is_http2(&self) -> bool {
        self.http2.load(Relaxed)
    }

    /// No request in flight, but one may be on its way: the connection has
    /// served none yet, or the next request's first bytes have arrived.
    /// Closing it now could drop a request its client has already sent.
    pub fn awaits_a_request(&self) -> bool {
        self.in_flight.load(Relaxed) == 0
            && (!self.served.load(Relaxed) || self.head_started.load(Relaxed) > 0)
    }

    /// The next deadline and what it is for; `None` while a request runs
    /// (its own deadlines apply then).
    pub fn due(&self, timeouts: &Timeouts) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let after = |ms: u64, timeout: Duration| self.opened + Duration::from_millis(ms) + timeout;
        if !self.served.load(Relaxed) {
            return Some((after(0, timeouts.header_read), Expiry::Head));
        }
        // An HTTP/2 client's pings and window updates are not a request head.
        let head = self.head_started.load(Relaxed);
        if head > 0 && !self.is_http2() {
            return Some((after(head - 1, timeouts.header_read), Expiry::Head));
        }
        let idle = self.idle_since.load(Relaxed);
        Some((after(idle, timeouts.idle), Expiry::Idle))
    }

    /// Resolves when [`Activity::due`] may have changed.
    /// When to look again, or that the deadline passed. Nothing wakes the
    /// watchdog when requests come and go, so it never waits longer than
    /// the shorter timeout: a request that ends, or a head that begins,
    /// sets a deadline at least that far ahead, which the next check then
    /// meets exactly.
    pub fn next_check(&self, timeouts: &Timeouts, now: Instant) -> Check {
        let check_back = now + timeouts.header_read.min(timeouts.idle);
        match self.due(timeouts) {
            None => Check::At(check_back),
            Some((at, expiry)) if at <= now => Check::Expired(expiry),
            Some((at, _)) => Check::At(at.min(check_back)),
        }
    }
}

/// One request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now_ms(), Relaxed);
        activity.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_fresh_connection_has_the_head_deadline() {
        let activity = Activity::new();
        let (at, expiry) = activity.due(&TIMEOUTS).unwrap();
        assert_eq!(expiry, Expiry::Head);
        assert_eq!(at - activity.opened, TIMEOUTS.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_have_no_deadline_then_idle_starts() {
        let activity = Activity::new();
        let request = activity.begin(http::Version::HTTP_11);
        assert!(activity.due(&TIMEOUTS).is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(request);
        let (at, expiry) = activity.due(&TIMEOUTS).unwrap();
        assert_eq!(expiry, Expiry::Idle);
        assert_eq!(at - activity.opened, Duration::from_secs(65));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_checks_back_and_meets_each_deadline_exactly() {
        let activity = Activity::new();
        let opened = activity.opened;
        // A fresh connection: its head deadline.
        let head = opened + TIMEOUTS.header_read;
        assert_eq!(activity.next_check(&TIMEOUTS, opened), Check::At(head));
        // In flight: check back after the shorter timeout.
        let request = activity.begin(http::Version::HTTP_11);
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        assert_eq!(
            activity.next_check(&TIMEOUTS, now),
            Check::At(now + TIMEOUTS.header_read)
        );
        // Idle: no later than a head timeout ahead, then the idle deadline.
        drop(request);
        let idle_deadline = now + TIMEOUTS.idle;
        assert_eq!(
            activity.next_check(&TIMEOUTS, now),
            Check::At(now + TIMEOUTS.header_read)
        );
        assert_eq!(
            activity.next_check(&TIMEOUTS, idle_deadline - Duration::from_secs(1)),
            Check::At(idle_deadline)
        );
        assert_eq!(
            activity.next_check(&TIMEOUTS, idle_deadline),
            Check::Expired(Expiry::Idle)
        );
        // A head begun while idle is held to its own deadline.
        tokio::time::advance(Duration::from_secs(2)).await;
        activity.on_read();
        let begun = Instant::now();
        assert_eq!(
            activity.next_check(&TIMEOUTS, begun),
            Check::At(begun + TIMEOUTS.header_read)
        );
        assert_eq!(
            activity.next_check(&TIMEOUTS, begun + TIMEOUTS.header_read),
            Check::Expired(Expiry::Head)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_while_idle_starts_the_head_timer_on_http1_only() {
        for (version, expected) in [
            (http::Version::HTTP_11, Expiry::Head),
            (http::Version::HTTP_2, Expiry::Idle),
        ] {
            let activity = Activity::new();
            drop(activity.begin(version));
            tokio::time::advance(Duration::from_secs(1)).await;
            activity.on_read();
            assert_eq!(activity.due(&TIMEOUTS).unwrap().1, expected);
        }
    }
}
