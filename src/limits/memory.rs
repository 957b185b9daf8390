//! The embedded engine: bucket state in atomics, updated by compare-and-swap.
//! A multi-bucket admission checks every bucket first, then commits them one
//! by one; if a concurrent request won a race in between, the commits made so
//! far are rolled back. Limits are never exceeded; under a race a request may
//! be refused that a perfectly serial limiter would have admitted.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::bucket::Bucket;
use super::engine::{Charge, Decision, Refused};
use super::gcra::{self, Verdict};

pub struct MemoryEngine {
    epoch: Instant,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Seconds since start-up, offset so a fresh bucket (TAT 0) is full.
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() + 1.0
    }

    pub fn admit(&self, required: &[Charge<'_>], candidates: &[Vec<Charge<'_>>]) -> Decision {
        let now = self.now();
        let result = admit_at(required, candidates, now);
        let standings = required
            .iter()
            .map(|c| gcra::standing(load(c.bucket), now, c.bucket.shape))
            .collect();
        Decision { result, standings }
    }

    pub fn adjust(&self, changes: &[(&Bucket, i64)]) {
        let now = self.now();
        for (bucket, delta) in changes {
            apply(bucket, now, *delta);
        }
    }
}

fn admit_at(
    required: &[Charge<'_>],
    candidates: &[Vec<Charge<'_>>],
    now: f64,
) -> Result<Option<usize>, Refused> {
    check_all(required, 0, now)?;
    let chosen = choose(required.len(), candidates, now)?;
    let chosen_charges = chosen.map_or(&[][..], |index| &candidates[index][..]);
    let mut committed = 0;
    for (position, charge) in required.iter().chain(chosen_charges).enumerate() {
        if let Err(refused) = commit(charge, now, position) {
            let all: Vec<&Charge<'_>> = required.iter().chain(chosen_charges).collect();
            for done in &all[..committed] {
                apply(done.bucket, now, -(done.units as i64));
            }
            return Err(refused);
        }
        committed += 1;
    }
    Ok(chosen)
}

fn load(bucket: &Bucket) -> f64 {
    f64::from_bits(bucket.tat.load(Ordering::Acquire))
}

/// Checks without charging; `offset` is the position of `charges[0]`.
fn check_all(charges: &[Charge<'_>], offset: usize, now: f64) -> Result<(), Refused> {
    let mut worst: Option<Refused> = None;
    for (index, charge) in charges.iter().enumerate() {
        let tat = load(charge.bucket);
        match gcra::decide(tat, now, charge.bucket.shape, charge.units) {
            Verdict::Admit { .. } => {}
            Verdict::Never => {
                return Err(Refused::Never {
                    position: offset + index,
                });
            }
            Verdict::Wait(wait_secs) => {
                if worst.as_ref().is_none_or(|w| w.wait_secs() < wait_secs) {
                    worst = Some(Refused::Wait {
                        position: offset + index,
                        wait_secs,
                        used: gcra::used(tat, now, charge.bucket.shape),
                    });
                }
            }
        }
    }
    worst.map_or(Ok(()), Err)
}

/// The first candidate with room; refusal reports the soonest one to free up.
fn choose(
    offset: usize,
    candidates: &[Vec<Charge<'_>>],
    now: f64,
) -> Result<Option<usize>, Refused> {
    if candidates.is_empty() {
        return Ok(None);
    }
    let mut best: Option<Refused> = None;
    let mut position = offset;
    for (index, charges) in candidates.iter().enumerate() {
        match check_all(charges, position, now) {
            Ok(()) => return Ok(Some(index)),
            Err(refused) => {
                let better = match (&best, &refused) {
                    (None, _) => true,
                    (Some(Refused::Never { .. }), Refused::Wait { .. }) => true,
                    (Some(b), Refused::Wait { .. }) => refused.wait_secs() < b.wait_secs(),
                    _ => false,
                };
                if better {
                    best = Some(refused);
                }
            }
        }
        position += charges.len();
    }
    Err(best.unwrap_or(Refused::Never { position: offset }))
}

fn commit(charge: &Charge<'_>, now: f64, position: usize) -> Result<(), Refused> {
    let cell = &charge.bucket.tat;
    let mut current = cell.load(Ordering::Acquire);
    loop {
        let tat = f64::from_bits(current);
        match gcra::decide(tat, now, charge.bucket.shape, charge.units) {
            Verdict::Admit { new_tat } => {
                match cell.compare_exchange_weak(
                    current,
                    new_tat.to_bits(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Ok(()),
                    Err(actual) => current = actual,
                }
            }
            Verdict::Wait(wait_secs) => {
                return Err(Refused::Wait {
                    position,
                    wait_secs,
                    used: gcra::used(tat, now, charge.bucket.shape),
                });
            }
            Verdict::Never => return Err(Refused::Never { position }),
        }
    }
}

fn apply(bucket: &Bucket, now: f64, delta: i64) {
    let _ = bucket
        .tat
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            Some(gcra::adjust(f64::from_bits(current), now, bucket.shape, delta).to_bits())
        });
}
