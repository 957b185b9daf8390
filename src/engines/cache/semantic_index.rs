//! Approximate nearest neighbours for the semantic cache: multi-probe
//! random-hyperplane LSH (SimHash). Each of `TABLES` tables hashes a vector to
//! `BITS` sign bits; a lookup probes its own bucket and those reached by
//! flipping its `PROBES` least-confident bits (the ones a near neighbour most
//! likely differs in), then re-ranks only those entries by exact cosine.
//! Near-duplicates (cosine >= 0.9, the range a semantic cache uses) are found
//! with high probability, so lookups stay fast at 100,000+ entries without
//! scanning them all.
//!
//! Entries are grouped by partition (model, scope, system prompt, parameters):
//! a lookup only ever compares within its own partition.

use std::collections::HashMap;
use std::time::Instant;

use super::key::CacheKey;

const TABLES: usize = 8;
const BITS: u32 = 12;
/// Extra buckets probed per table, by flipping the least-confident bits.
const PROBES: usize = 4;

struct Item {
    vector: Vec<f32>,
    key: CacheKey,
    expires: Instant,
}

#[derive(Default)]
struct Partition {
    items: Vec<Item>,
    /// Per table: bucket -> item positions.
    buckets: Vec<HashMap<u16, Vec<u32>>>,
}

pub struct SemanticIndex {
    dimensions: usize,
    /// `TABLES * BITS` hyperplanes, each `dimensions` long.
    planes: Vec<Vec<f32>>,
    partitions: HashMap<u64, Partition>,
    max_entries: usize,
    len: usize,
}

impl SemanticIndex {
    pub fn new(dimensions: usize, max_entries: usize, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let planes = (0..TABLES * BITS as usize)
            .map(|_| (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect())
            .collect();
        Self {
            dimensions,
            planes,
            partitions: HashMap::new(),
            max_entries,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sign bits of one table, and each bit's projection.
    fn project(&self, vector: &[f32], table: usize) -> (u16, [f32; BITS as usize]) {
        let mut bits = 0u16;
        let mut projections = [0f32; BITS as usize];
        for (bit, projection) in projections.iter_mut().enumerate() {
            let plane = &self.planes[table * BITS as usize + bit];
            *projection = plane.iter().zip(vector).map(|(p, v)| p * v).sum();
            if *projection >= 0.0 {
                bits |= 1 << bit;
            }
        }
        (bits, projections)
    }

    fn signature(&self, vector: &[f32], table: usize) -> u16 {
        self.project(vector, table).0
    }

    /// The own bucket, then those one least-confident bit away.
    fn probes(&self, vector: &[f32], table: usize) -> impl Iterator<Item = u16> {
        let (bits, projections) = self.project(vector, table);
        let mut order: Vec<usize> = (0..BITS as usize).collect();
        order.sort_by(|a, b| projections[*a].abs().total_cmp(&projections[*b].abs()));
        std::iter::once(bits).chain(
            order
                .into_iter()
                .take(PROBES)
                .map(move |bit| bits ^ (1 << bit)),
        )
    }

    /// Adds a normalised vector. Past `max_entries`, expired entries are
    /// dropped first, then the oldest of the partition.
    pub fn insert(&mut self, partition: u64, vector: Vec<f32>, key: CacheKey, expires: Instant) {
        if vector.len() != self.dimensions {
            return;
        }
        if self.len >= self.max_entries {
            self.compact(Instant::now());
        }
        let signatures: Vec<u16> = (0..TABLES).map(|t| self.signature(&vector, t)).collect();
        let part = self.partitions.entry(partition).or_default();
        if part.buckets.is_empty() {
            part.buckets = vec![HashMap::new(); TABLES];
        }
        let position = part.items.len() as u32;
        for (table, signature) in signatures.into_iter().enumerate() {
            part.buckets[table]
                .entry(signature)
                .or_default()
                .push(position);
        }
        part.items.push(Item {
            vector,
            key,
            expires,
        });
        self.len += 1;
    }

    /// The most similar live entry at or above `threshold`, with its cosine.
    pub fn nearest(
        &self,
        partition: u64,
        vector: &[f32],
        threshold: f32,
        now: Instant,
    ) -> Option<(CacheKey, f32)> {
        let part = self.partitions.get(&partition)?;
        if vector.len() != self.dimensions {
            return None;
        }
        let mut best: Option<(CacheKey, f32)> = None;
        let mut seen = std::collections::HashSet::new();
        for table in 0..TABLES {
            for probe in self.probes(vector, table) {
                let Some(bucket) = part.buckets[table].get(&probe) else {
                    continue;
                };
                for &position in bucket {
                    if !seen.insert(position) {
                        continue;
                    }
                    let item = &part.items[position as usize];
                    if item.expires <= now {
                        continue;
                    }
                    let cosine: f32 = item.vector.iter().zip(vector).map(|(a, b)| a * b).sum();
                    if cosine >= threshold && best.is_none_or(|(_, b)| cosine > b) {
                        best = Some((item.key, cosine));
                    }
                }
            }
        }
        best
    }

    /// Rebuilds partitions without expired entries, and trims the largest
    /// partitions' oldest entries if still over the bound.
    fn compact(&mut self, now: Instant) {
        let mut partitions = std::mem::take(&mut self.partitions);
        self.len = 0;
        let budget = self.max_entries.saturating_mul(9) / 10;
        let total: usize = partitions.values().map(|p| p.items.len()).sum();
        let keep_fraction = if total > budget {
            budget as f64 / total as f64
        } else {
            1.0
        };
        for (id, part) in partitions.drain() {
            let live: Vec<Item> = part.items.into_iter().filter(|i| i.expires > now).collect();
            let keep = ((live.len() as f64) * keep_fraction).ceil() as usize;
            let skip = live.len().saturating_sub(keep);
            for item in live.into_iter().skip(skip) {
                self.insert(id, item.vector, item.key, item.expires);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn unit(mut v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    fn random(rng: &mut fastrand::Rng, dims: usize) -> Vec<f32> {
        unit((0..dims).map(|_| rng.f32() - 0.5).collect())
    }

    #[test]
    fn finds_near_duplicates_among_many_and_respects_partitions() {
        let dims = 64;
        let mut rng = fastrand::Rng::with_seed(7);
        let mut index = SemanticIndex::new(dims, 100_000, 1);
        let later = Instant::now() + Duration::from_secs(60);
        let mut targets = Vec::new();
        for i in 0..5_000u128 {
            let v = random(&mut rng, dims);
            if i % 500 == 0 {
                targets.push((i, v.clone()));
            }
            index.insert(1, v, CacheKey(i), later);
        }
        let mut found = 0;
        for (i, v) in &targets {
            // A perturbed copy: cosine about 0.93, near the threshold used.
            let near = unit(v.iter().map(|x| x + (rng.f32() - 0.5) * 0.14).collect());
            let cosine: f32 = near.iter().zip(v).map(|(a, b)| a * b).sum();
            assert!((0.9..0.97).contains(&cosine), "{cosine}");
            if let Some((key, cosine)) = index.nearest(1, &near, 0.9, Instant::now()) {
                assert!(cosine >= 0.9);
                found += usize::from(key == CacheKey(*i));
            }
            assert!(
                index.nearest(2, &near, 0.9, Instant::now()).is_none(),
                "other partition"
            );
        }
        assert!(
            found >= targets.len() - 1,
            "recall {found}/{}",
            targets.len()
        );
        let stranger = random(&mut rng, dims);
        assert!(index.nearest(1, &stranger, 0.95, Instant::now()).is_none());
    }

    #[test]
    fn expired_entries_are_not_returned_and_compaction_bounds_size() {
        let mut index = SemanticIndex::new(4, 10, 1);
        let v = unit(vec![1.0, 0.0, 0.0, 0.0]);
        index.insert(1, v.clone(), CacheKey(1), Instant::now());
        assert!(
            index
                .nearest(1, &v, 0.9, Instant::now() + Duration::from_millis(1))
                .is_none()
        );
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..50 {
            index.insert(1, v.clone(), CacheKey(i), later);
        }
        assert!(index.len() <= 10, "{}", index.len());
        assert!(index.nearest(1, &v, 0.9, Instant::now()).is_some());
    }
}
