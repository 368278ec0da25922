//! A fixed log-linear latency histogram in atomics.
//!
//! Values are integer microseconds. Below 16 µs every value has its own
//! bucket; above, each power of two is split into 16 equal sub-buckets, so
//! a bucket is at most 1/16 of its lower bound wide and its midpoint is
//! within 3.2 % of any value in it (the ≤ 5 % bound the guard needs). The
//! top power is 2^25 µs, so everything up to 67 s has a bucket; longer
//! values land in the last one. The index is two shifts and a
//! `leading_zeros` — no floating point on the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Highest power of two with buckets: 2^25 µs ≈ 33.5 s … 67 s.
const TOP_POWER: u32 = 25;
pub const BUCKETS: usize = ((TOP_POWER - SUB_BITS + 2) as usize) * SUB as usize;
const MAX_VALUE: u64 = (1 << (TOP_POWER + 1)) - 1;

/// The bucket of a value in microseconds.
#[inline]
pub fn bucket_index(micros: u64) -> usize {
    let v = micros.min(MAX_VALUE);
    if v < SUB {
        return v as usize;
    }
    let power = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (power - SUB_BITS)) & (SUB - 1);
    ((power - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The lower bound and width of a bucket, in microseconds.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, 1);
    }
    let power = index / SUB + u64::from(SUB_BITS) - 1;
    let sub = index % SUB;
    let width = 1u64 << (power - u64::from(SUB_BITS));
    ((SUB + sub) * width, width)
}

/// The value a bucket stands for: its midpoint.
pub fn bucket_value(index: usize) -> Duration {
    let (low, width) = bucket_bounds(index);
    Duration::from_nanos(low * 1000 + width * 500)
}

/// Exclusive upper bound of a bucket, in seconds (for Prometheus `le`).
pub fn bucket_upper_seconds(index: usize) -> f64 {
    let (low, width) = bucket_bounds(index);
    (low + width) as f64 / 1e6
}

/// Counts per bucket; every operation is a relaxed atomic.
pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicHistogram").finish_non_exhaustive()
    }
}

impl AtomicHistogram {
    /// Counts one value; `exclusive` when the caller is the only writer.
    #[inline]
    pub fn record(&self, micros: u64, exclusive: bool) {
        super::bump(&self.counts[bucket_index(micros)], 1, exclusive);
    }

    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Adds this histogram's counts into `into`.
    pub fn add_to(&self, into: &mut [u64]) {
        for (sum, c) in into.iter_mut().zip(self.counts.iter()) {
            *sum += c.load(Ordering::Relaxed);
        }
    }
}

/// The value at quantile `q` (0..=1) of bucket counts; `None` when empty.
pub fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the q-th value, 1-based: p95 of 100 values is the 95th.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_value(index));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_from_100us_to_60s_is_within_5_percent() {
        let mut v = 100u64;
        while v <= 60_000_000 {
            let got = bucket_value(bucket_index(v)).as_nanos() as f64 / 1000.0;
            let error = (got - v as f64).abs() / v as f64;
            assert!(
                error <= 0.05,
                "{v} µs read back as {got} µs ({:.1} %)",
                error * 100.0
            );
            v = v * 1009 / 1000 + 1;
        }
    }

    #[test]
    fn indices_are_monotonic_and_in_range() {
        let mut last = 0;
        for v in (0..70_000_000u64).step_by(997) {
            let i = bucket_index(v);
            assert!(i >= last && i < BUCKETS);
            last = i;
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_mix() {
        let h = AtomicHistogram::default();
        for _ in 0..90 {
            h.record(5_000, false);
        }
        for _ in 0..10 {
            h.record(800_000, true);
        }
        let mut counts = vec![0; BUCKETS];
        h.add_to(&mut counts);
        let near = |d: Option<Duration>, us: f64| {
            let got = d.unwrap().as_nanos() as f64 / 1000.0;
            (got - us).abs() / us <= 0.05
        };
        assert!(near(quantile(&counts, 0.5), 5_000.0));
        assert!(near(quantile(&counts, 0.90), 5_000.0));
        assert!(near(quantile(&counts, 0.95), 800_000.0));
        assert!(near(quantile(&counts, 0.99), 800_000.0));
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    }
}
