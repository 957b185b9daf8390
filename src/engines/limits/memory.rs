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
    /// `epoch` is shared by every snapshot's engine (see `LimitState`).
    pub fn new(epoch: Instant) -> Self {
        Self { epoch }
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
    for (position, charge) in required.iter().chain(chosen_charges).enumerate() {
        if let Err(refused) = commit(charge, now, position) {
            for done in required.iter().chain(chosen_charges).take(position) {
                apply(done.bucket, now, -(done.units as i64));
            }
            return Err(refused);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::engines::limits::bucket::{Kind, Scope};
    use crate::engines::limits::gcra::Shape;

    fn bucket(limit: u64) -> Arc<Bucket> {
        Arc::new(Bucket {
            scope: Scope::Key,
            name: Arc::from("k"),
            kind: Kind::Requests,
            shape: Shape::new(limit, 0.0),
            redis_key: String::new(),
            tat: Arc::new(AtomicU64::new(0f64.to_bits())),
        })
    }

    #[test]
    fn contended_bucket_admits_exactly_its_capacity() {
        let engine = Arc::new(MemoryEngine::new(Instant::now()));
        let shared = bucket(1000);
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        let charge = [Charge {
                            bucket: &shared,
                            units: 1,
                        }];
                        if engine.admit(&charge, &[]).result.is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_charges_no_other_layer() {
        let engine = MemoryEngine::new(Instant::now());
        let (key, org) = (bucket(10), bucket(1));
        let both = [
            Charge {
                bucket: &key,
                units: 1,
            },
            Charge {
                bucket: &org,
                units: 1,
            },
        ];
        assert!(engine.admit(&both, &[]).result.is_ok());
        let refused = engine.admit(&both, &[]);
        assert!(matches!(
            refused.result,
            Err(Refused::Wait { position: 1, .. })
        ));
        assert_eq!(
            refused.standings[0].remaining, 9,
            "the key was not charged for the refusal"
        );
        // A minute later the org bucket has refilled.
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        assert!(engine.admit(&both, &[]).result.is_ok());
    }

    #[test]
    fn first_candidate_with_room_is_chosen() {
        let engine = MemoryEngine::new(Instant::now());
        let (full, roomy) = (bucket(1), bucket(5));
        let take_full = [Charge {
            bucket: &full,
            units: 1,
        }];
        assert!(engine.admit(&take_full, &[]).result.is_ok());
        let candidates = vec![
            vec![Charge {
                bucket: &full,
                units: 1,
            }],
            vec![Charge {
                bucket: &roomy,
                units: 1,
            }],
        ];
        assert_eq!(engine.admit(&[], &candidates).result, Ok(Some(1)));
    }
}
