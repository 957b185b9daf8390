//! GCRA (the generic cell rate algorithm): a token bucket kept as one number,
//! the theoretical arrival time (TAT). `limit` units per minute refill
//! continuously; up to `capacity` units may be taken at once. The in-memory
//! and Redis engines share this maths (the Lua script mirrors `decide`).
//!
//! Time is in seconds as f64. Charges are whole units, so a boundary
//! comparison only needs an epsilon far below one unit's time.

/// Shape of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    limit: u64,
    capacity: u64,
}

impl Shape {
    /// `burst` is extra capacity as a fraction of `limit`.
    pub fn new(limit: u64, burst: f64) -> Self {
        let limit = limit.max(1);
        let extra = (limit as f64 * burst).floor() as u64;
        Self {
            limit,
            capacity: limit + extra,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Seconds of refill per unit.
    pub fn unit_secs(&self) -> f64 {
        60.0 / self.limit as f64
    }

    fn tolerance(&self) -> f64 {
        self.capacity as f64 * self.unit_secs()
    }

    /// Far below one unit's time, far above f64 rounding at these magnitudes.
    fn epsilon(&self) -> f64 {
        (self.unit_secs() * 1e-3).min(1e-6)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Admit {
        new_tat: f64,
    },
    /// Admissible after this many seconds.
    Wait(f64),
    /// Larger than the whole bucket: no wait will make it fit.
    Never,
}

pub fn decide(tat: f64, now: f64, shape: Shape, units: u64) -> Verdict {
    if units > shape.capacity {
        return Verdict::Never;
    }
    let new_tat = tat.max(now) + units as f64 * shape.unit_secs();
    let excess = new_tat - now - shape.tolerance();
    if excess <= shape.epsilon() {
        Verdict::Admit { new_tat }
    } else {
        Verdict::Wait(excess)
    }
}

/// A bucket's state as OpenAI's headers describe it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: f64,
}

pub fn standing(tat: f64, now: f64, shape: Shape) -> Standing {
    let backlog = (tat - now).max(0.0);
    let used = backlog / shape.unit_secs();
    let remaining = (shape.capacity as f64 - used + 1e-9).floor().max(0.0) as u64;
    Standing {
        limit: shape.limit,
        remaining,
        reset_secs: backlog,
    }
}

/// Units in use at `now` (for "Used N" in rejection messages).
pub fn used(tat: f64, now: f64, shape: Shape) -> u64 {
    shape.capacity - standing(tat, now, shape).remaining
}

/// Charges (`delta > 0`) or refunds (`delta < 0`) units after the fact. A
/// charge may overshoot the capacity: later requests wait it off.
pub fn adjust(tat: f64, now: f64, shape: Shape, delta: i64) -> f64 {
    (tat.max(now) + delta as f64 * shape.unit_secs()).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits `units` at `now` if possible, returning the verdict.
    fn take(tat: &mut f64, now: f64, shape: Shape, units: u64) -> Verdict {
        let verdict = decide(*tat, now, shape, units);
        if let Verdict::Admit { new_tat } = verdict {
            *tat = new_tat;
        }
        verdict
    }

    #[test]
    fn a_full_bucket_admits_exactly_its_capacity_at_once() {
        for (limit, burst) in [(30, 0.0), (7, 0.5), (60, 0.1), (700_000, 0.0), (1, 0.0)] {
            let shape = Shape::new(limit, burst);
            let mut tat = 0.0;
            let admitted = (0..shape.capacity() + 10)
                .filter(|_| matches!(take(&mut tat, 100.0, shape, 1), Verdict::Admit { .. }))
                .count() as u64;
            assert_eq!(admitted, shape.capacity(), "limit {limit} burst {burst}");
        }
        assert_eq!(Shape::new(30, 0.1).capacity(), 33);
    }

    #[test]
    fn refills_continuously_not_per_window() {
        let shape = Shape::new(60, 0.0); // one per second
        let mut tat = 0.0;
        for _ in 0..60 {
            assert!(matches!(
                take(&mut tat, 10.0, shape, 1),
                Verdict::Admit { .. }
            ));
        }
        match take(&mut tat, 10.0, shape, 1) {
            Verdict::Wait(secs) => assert!((secs - 1.0).abs() < 1e-6, "{secs}"),
            other => panic!("{other:?}"),
        }
        // Half a second later: still waiting half a second, not a minute.
        match take(&mut tat, 10.5, shape, 1) {
            Verdict::Wait(secs) => assert!((secs - 0.5).abs() < 1e-6, "{secs}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            take(&mut tat, 11.0, shape, 1),
            Verdict::Admit { .. }
        ));
    }

    #[test]
    fn standing_reports_remaining_and_reset() {
        let shape = Shape::new(60, 0.0);
        let mut tat = 0.0;
        for _ in 0..15 {
            take(&mut tat, 0.0, shape, 1);
        }
        let now = standing(tat, 0.0, shape);
        assert_eq!((now.limit, now.remaining), (60, 45));
        assert!((now.reset_secs - 15.0).abs() < 1e-9);
        assert_eq!(used(tat, 0.0, shape), 15);
        // 5 s later 5 units have come back.
        assert_eq!(standing(tat, 5.0, shape).remaining, 50);
        assert_eq!(standing(tat, 100.0, shape).remaining, 60);
    }

    #[test]
    fn oversized_requests_never_fit() {
        let shape = Shape::new(1000, 0.0);
        assert_eq!(decide(0.0, 0.0, shape, 1001), Verdict::Never);
        assert!(matches!(
            decide(0.0, 0.0, shape, 1000),
            Verdict::Admit { .. }
        ));
    }

    #[test]
    fn refunds_and_extra_charges_move_the_bucket() {
        let shape = Shape::new(600, 0.0); // 10 units per second
        let mut tat = 0.0;
        take(&mut tat, 0.0, shape, 500); // estimate
        tat = adjust(tat, 0.0, shape, -400); // actual was 100
        assert_eq!(standing(tat, 0.0, shape).remaining, 500);
        tat = adjust(tat, 0.0, shape, 600); // actual far above estimate
        assert_eq!(standing(tat, 0.0, shape).remaining, 0);
        match decide(tat, 0.0, shape, 1) {
            Verdict::Wait(secs) => assert!((secs - 10.1).abs() < 1e-6, "{secs}"),
            other => panic!("{other:?}"),
        }
        // A refund never pushes the bucket above full.
        assert_eq!(adjust(0.0, 50.0, shape, -100), 50.0);
    }
}
