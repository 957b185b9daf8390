//! `concurrency = "adaptive"`: a deployment's concurrency limit found by
//! AIMD instead of configured. A provider's real capacity moves with its
//! load and quota; a fixed limit is either too low (quota left unused) or too
//! high (429 storms). The limit grows while calls succeed with the deployment
//! busy, and shrinks on push-back (429, a 503 with a hint, a timeout) or on
//! latency growing past twice its baseline, within `[min, max]`. It is the
//! capacity of the deployment's `Scheduler`, so callers over it wait in the
//! fair priority queue.
//!
//! One overshoot is counted once: push-back from calls that started before
//! the last cut does not cut again, nor does any within a cut's long hint
//! (the deployment is throttled then, so it is calls failing fast).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::engines::queue::Scheduler;

/// A cut keeps this share of the limit.
const BACKOFF: f64 = 0.75;
/// Latency above this multiple of the baseline is push-back.
const LATENCY_TOLERANCE: f64 = 2.0;
/// How far each window's fastest call moves a higher baseline: slow, so
/// queueing inside the upstream does not become the new normal at once.
const BASELINE_DRIFT: f64 = 0.02;

/// A 429 hint up to this long is concurrency push-back, which the limit
/// absorbs; a longer one is too when other calls are in flight (see
/// `AdaptiveLimit::absorbs`), else a quota window, which takes the
/// deployment out of rotation as on a fixed limit.
const ABSORBED_HINT: Duration = Duration::from_secs(1);

/// What one upstream attempt said about the deployment's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A 2xx, and how long it took.
    Success(Duration),
    /// A 429, a 503 with a hint, or a timeout; the upstream's wait, if any.
    Overload(Option<Duration>),
}

/// Which way the limit moved, for `sluice_deployment_concurrency_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up,
    Down,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// The limit of one deployment, shared by every config snapshot that has it.
pub struct AdaptiveLimit {
    slots: Arc<Scheduler>,
    control: Mutex<Control>,
    /// Mirrors of the control's fields, for lock-free reads.
    limit: AtomicUsize,
    bounds: AtomicU64,
}

impl AdaptiveLimit {
    /// Starts at `min` and grows (by half per round trip until the first
    /// push-back), so a new deployment is not hit with `max` calls at once;
    /// not doubling keeps slow start's one overshoot small.
    pub fn new(min: usize, max: usize, slots: Arc<Scheduler>) -> Arc<Self> {
        let control = Control::new(min, max);
        slots.set_capacity(control.limit);
        Arc::new(Self {
            slots,
            limit: AtomicUsize::new(control.limit),
            bounds: AtomicU64::new(pack(control.min, control.max)),
            control: Mutex::new(control),
        })
    }

    /// Whether push-back with `hint` is left to the limit rather than
    /// throttling the deployment: callers then queue for the smaller limit
    /// instead of finding no usable deployment. A short hint (or none) is
    /// concurrency push-back; so is any hint while other calls are in
    /// flight on the deployment (the caller still holds its own slot): the
    /// upstream is serving them as it refuses this one, so it is out of
    /// room, not out of quota. A long hint with nothing else in flight is a
    /// quota window and throttles the deployment.
    pub fn absorbs(&self, hint: Option<Duration>) -> bool {
        Self::is_short(hint) || self.slots.in_use() > 1
    }

    /// Whether `hint` (or none) is short enough to be concurrency
    /// push-back whatever else is in flight (an absorbed retry still waits
    /// it out).
    pub fn is_short(hint: Option<Duration>) -> bool {
        hint.is_none_or(|hint| hint <= ABSORBED_HINT)
    }

    /// A reload's bounds: the learnt limit is kept, clamped into them.
    pub fn rebound(&self, min: usize, max: usize) {
        if let Ok(mut control) = self.control.lock() {
            control.min = min.max(1);
            control.max = max.max(control.min);
            control.limit = control.limit.clamp(control.min, control.max);
            self.publish(&control);
        }
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// `(min, max)`.
    pub fn bounds(&self) -> (usize, usize) {
        let packed = self.bounds.load(Ordering::Relaxed);
        (
            (packed >> 32) as usize,
            (packed & u64::from(u32::MAX)) as usize,
        )
    }

    /// Feeds one attempt's outcome; `started` is when it was sent. Called
    /// while the attempt still holds its slot.
    pub fn record(&self, signal: Signal, started: Instant, now: Instant) -> Option<Change> {
        let busy = self.slots.in_use() >= self.limit() || self.slots.depth() > 0;
        let mut control = self.control.lock().ok()?;
        let change = control.record(signal, started, now, busy);
        if change.is_some() {
            self.publish(&control);
        }
        change
    }

    fn publish(&self, control: &Control) {
        self.limit.store(control.limit, Ordering::Relaxed);
        self.bounds
            .store(pack(control.min, control.max), Ordering::Relaxed);
        self.slots.set_capacity(control.limit);
    }
}

fn pack(min: usize, max: usize) -> u64 {
    let clip = |n: usize| n.min(u32::MAX as usize) as u64;
    (clip(min) << 32) | clip(max)
}

/// The AIMD state machine, apart from the slots it drives.
#[derive(Debug)]
struct Control {
    limit: usize,
    min: usize,
    max: usize,
    /// Until the first push-back: +1 per two successes (x1.5 per round trip).
    slow_start: bool,
    /// Seconds: the fastest window seen, drifting up slowly.
    baseline: Option<f64>,
    /// Push-back from calls started before this is the same overshoot.
    last_cut: Option<Instant>,
    /// The end of the last cut's long hint (one the limit does not absorb):
    /// push-back before then is calls failing fast on a throttled deployment.
    hold_until: Option<Instant>,
    window: Window,
}

/// About one limit's worth of completed calls (one round trip when busy).
#[derive(Debug, Default)]
struct Window {
    done: usize,
    latency_sum: f64,
    fastest: Option<f64>,
    /// Whether the limit, not the load, held calls back at some point.
    busy: bool,
}

impl Control {
    fn new(min: usize, max: usize) -> Self {
        let min = min.max(1);
        Self {
            limit: min,
            min,
            max: max.max(min),
            slow_start: true,
            baseline: None,
            last_cut: None,
            hold_until: None,
            window: Window::default(),
        }
    }

    fn record(
        &mut self,
        signal: Signal,
        started: Instant,
        now: Instant,
        busy: bool,
    ) -> Option<Change> {
        match signal {
            Signal::Overload(hint) => self.push_back(hint, started, now),
            Signal::Success(latency) => self.success(latency.as_secs_f64(), started, now, busy),
        }
    }

    fn push_back(
        &mut self,
        hint: Option<Duration>,
        started: Instant,
        now: Instant,
    ) -> Option<Change> {
        let same_overshoot = self.last_cut.is_some_and(|cut| started < cut);
        let holding = self.hold_until.is_some_and(|until| now < until);
        if same_overshoot || holding {
            return None;
        }
        self.cut(now, hint)
    }

    fn success(
        &mut self,
        latency: f64,
        started: Instant,
        now: Instant,
        busy: bool,
    ) -> Option<Change> {
        let window = &mut self.window;
        window.done += 1;
        window.latency_sum += latency;
        window.fastest = Some(window.fastest.map_or(latency, |f| f.min(latency)));
        window.busy |= busy;
        if self.slow_start && busy {
            return if window.done.is_multiple_of(2) {
                self.grow()
            } else {
                None
            };
        }
        if self.window.done < self.limit {
            return None;
        }
        let window = std::mem::take(&mut self.window);
        let mean = window.latency_sum / window.done as f64;
        let fastest = window.fastest.unwrap_or(mean);
        let slow = self
            .baseline
            .is_some_and(|baseline| mean > baseline * LATENCY_TOLERANCE);
        self.baseline = Some(match self.baseline {
            Some(baseline) if fastest > baseline => {
                baseline + (fastest - baseline) * BASELINE_DRIFT
            }
            _ => fastest,
        });
        if slow {
            let fresh = self.last_cut.is_none_or(|cut| started >= cut);
            let holding = self.hold_until.is_some_and(|until| now < until);
            return if fresh && !holding {
                self.cut(now, None)
            } else {
                None
            };
        }
        if window.busy { self.grow() } else { None }
    }

    fn grow(&mut self) -> Option<Change> {
        (self.limit < self.max).then(|| {
            self.limit += 1;
            Change::Up
        })
    }

    fn cut(&mut self, now: Instant, hint: Option<Duration>) -> Option<Change> {
        self.slow_start = false;
        self.last_cut = Some(now);
        self.hold_until = hint
            .filter(|hint| !AdaptiveLimit::is_short(Some(*hint)))
            .map(|hint| now + hint);
        self.window = Window::default();
        let target = ((self.limit as f64 * BACKOFF) as usize)
            .min(self.limit.saturating_sub(1))
            .max(self.min);
        (target < self.limit).then(|| {
            self.limit = target;
            Change::Down
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ok(control: &mut Control, at: Instant, latency_ms: u32) -> Option<Change> {
        control.record(
            Signal::Success(MS * latency_ms),
            at,
            at + MS * latency_ms,
            true,
        )
    }

    /// Out of slow start at `limit`, with a 100 ms baseline.
    fn settled(limit: usize, t0: Instant) -> Control {
        let mut control = Control::new(1, 100);
        while control.limit < limit {
            ok(&mut control, t0, 100);
        }
        control.slow_start = false;
        control.window = Window::default();
        for _ in 0..limit {
            ok(&mut control, t0, 100);
        }
        control.limit = limit;
        control
    }

    #[test]
    fn slow_start_grows_by_one_per_two_busy_successes_up_to_max() {
        let t0 = Instant::now();
        let mut control = Control::new(2, 5);
        assert_eq!(control.limit, 2);
        for expected in 3..=5 {
            assert_eq!(ok(&mut control, t0, 10), None);
            assert_eq!(ok(&mut control, t0, 10), Some(Change::Up));
            assert_eq!(control.limit, expected);
        }
        assert_eq!(ok(&mut control, t0, 10), None);
        assert_eq!(ok(&mut control, t0, 10), None);
        assert_eq!(control.limit, 5);
    }

    #[test]
    fn idle_deployment_does_not_grow() {
        let t0 = Instant::now();
        let mut control = Control::new(1, 10);
        for _ in 0..20 {
            control.record(Signal::Success(MS * 10), t0, t0, false);
        }
        assert_eq!(control.limit, 1);
    }

    #[test]
    fn a_short_hint_is_absorbed_so_fresh_push_back_within_it_cuts() {
        let t0 = Instant::now();
        let mut control = settled(20, t0);
        let cut_at = t0 + MS * 1000;
        control.record(Signal::Overload(Some(MS * 100)), cut_at, cut_at, true);
        assert_eq!(control.limit, 15);
        // Sent after the cut and pushed back: 15 is still too many.
        let fresh = cut_at + MS * 10;
        assert_eq!(
            control.record(Signal::Overload(Some(MS * 100)), fresh, fresh, true),
            Some(Change::Down)
        );
    }

    #[test]
    fn after_the_first_cut_grows_one_per_window() {
        let t0 = Instant::now();
        let mut control = settled(8, t0);
        let t1 = t0 + MS * 1000;
        for _ in 0..7 {
            assert_eq!(ok(&mut control, t1, 100), None);
        }
        assert_eq!(ok(&mut control, t1, 100), Some(Change::Up));
        assert_eq!(control.limit, 9);
    }

    #[test]
    fn push_back_cuts_by_a_quarter_not_below_min() {
        let t0 = Instant::now();
        let mut control = settled(20, t0);
        let t1 = t0 + MS * 1000;
        let change = control.record(Signal::Overload(None), t1, t1, true);
        assert_eq!(change, Some(Change::Down));
        assert_eq!(control.limit, 15);
        let mut control = Control::new(3, 10);
        control.limit = 4;
        control.record(Signal::Overload(None), t1, t1, true);
        assert_eq!(control.limit, 3);
        assert_eq!(
            control.record(Signal::Overload(None), t1 + MS, t1 + MS, true),
            None
        );
        assert_eq!(control.limit, 3);
    }

    #[test]
    fn one_overshoot_is_cut_once() {
        let t0 = Instant::now();
        let mut control = settled(20, t0);
        let cut_at = t0 + MS * 1000;
        control.record(Signal::Overload(None), cut_at - MS * 5, cut_at, true);
        assert_eq!(control.limit, 15);
        // Calls sent before the cut answer 429 later: the same overshoot.
        let late = control.record(Signal::Overload(None), cut_at - MS, cut_at + MS * 50, true);
        assert_eq!(late, None);
        // A call sent after the cut that is pushed back: a new overshoot.
        let fresh = control.record(Signal::Overload(None), cut_at + MS, cut_at + MS * 60, true);
        assert_eq!(fresh, Some(Change::Down));
        assert_eq!(control.limit, 11);
    }

    #[test]
    fn push_back_within_a_long_hint_does_not_cut_again() {
        let t0 = Instant::now();
        let mut control = settled(20, t0);
        let cut_at = t0 + MS * 1000;
        control.record(Signal::Overload(Some(MS * 5000)), cut_at, cut_at, true);
        assert_eq!(control.limit, 15);
        let fast_fail = cut_at + MS * 100;
        assert_eq!(
            control.record(Signal::Overload(None), fast_fail, fast_fail, true),
            None
        );
        let after = cut_at + MS * 5100;
        assert_eq!(
            control.record(Signal::Overload(None), after, after, true),
            Some(Change::Down)
        );
    }

    #[test]
    fn latency_past_twice_the_baseline_cuts_at_the_window_end() {
        let t0 = Instant::now();
        let mut control = settled(8, t0);
        let t1 = t0 + MS * 1000;
        for _ in 0..7 {
            assert_eq!(ok(&mut control, t1, 250), None);
        }
        assert_eq!(ok(&mut control, t1, 250), Some(Change::Down));
        assert_eq!(control.limit, 6);
        // 1.5x the baseline is tolerated: the limit grows again.
        for _ in 0..5 {
            ok(&mut control, t1 + MS * 1000, 150);
        }
        assert_eq!(ok(&mut control, t1 + MS * 1000, 150), Some(Change::Up));
    }

    #[test]
    fn baseline_is_the_fastest_window_drifting_up_slowly() {
        let t0 = Instant::now();
        let mut control = settled(4, t0);
        assert_eq!(control.baseline, Some(0.1));
        for _ in 0..4 {
            ok(&mut control, t0, 50);
        }
        assert_eq!(control.baseline, Some(0.05));
        // The first window grew the limit to 5.
        for _ in 0..5 {
            ok(&mut control, t0, 90);
        }
        let baseline = control.baseline.unwrap_or_default();
        assert!((baseline - 0.0508).abs() < 1e-6, "{baseline}");
    }
}
