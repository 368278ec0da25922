//! A per-thread pseudo-random generator for load balancing decisions.
//!
//! `rand::thread_rng` would do, but its ChaCha core costs more than the rest
//! of the pick; a wyrand step in a thread-local `Cell` is a few instructions,
//! lock-free and allocation-free. Statistical quality is ample for spreading
//! traffic; nothing security-relevant depends on it.

use std::cell::Cell;

thread_local! {
    static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// A uniformly distributed 64-bit value from this thread's generator.
#[inline]
pub fn fast_random() -> u64 {
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A uniform value in `0..n` (n > 0) without modulo bias worth speaking of:
/// the multiply-shift maps 32 random bits onto the range.
#[inline]
pub fn below(n: u32, random: u64) -> u32 {
    ((u64::from(random as u32) * u64::from(n)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut seen = [false; 7];
        for _ in 0..10_000 {
            let v = below(7, fast_random());
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value of 0..7 is drawn");
    }
}
