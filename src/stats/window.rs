//! A sliding window as a ring of short time slots.
//!
//! The window is cut into `SLOTS` slots of `window / SLOTS` each (at least
//! 100 ms). A record lands in the slot of its time; a slot remembers which
//! slot number (epoch) it holds. Recording into a slot that still holds an
//! older epoch first claims it with a compare-and-swap and zeroes it — the
//! winner zeroes, everyone else records on. A record racing with that reset
//! may be lost or counted in the new epoch: at most a handful of requests
//! once per slot period, an accepted approximation for a lock-free window.
//!
//! A read sums the slots whose epoch lies in the last `SLOTS` slot numbers
//! ending at `now`: the current, partly filled slot plus the full ones
//! before it, i.e. between `window - slot` and `window` of history. The ring
//! has one spare slot, so the slot being reset for the future is never one
//! being summed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::AtomicHistogram;
use super::{bump, FailureKind, StatusClass};

/// Slots per window.
pub const SLOTS: u64 = 30;
const RING: usize = SLOTS as usize + 1;
const MIN_SLOT_MS: u64 = 100;

#[derive(Debug, Default)]
struct Slot {
    epoch: AtomicU64,
    by_class: [AtomicU64; 5],
    failures: [AtomicU64; 7],
    latency: AtomicHistogram,
}

impl Slot {
    fn reset(&self) {
        for c in self.by_class.iter().chain(self.failures.iter()) {
            c.store(0, Ordering::Relaxed);
        }
        self.latency.reset();
    }
}

#[derive(Debug)]
pub struct SlidingWindow {
    slot_ms: u64,
    slots: Box<[Slot]>,
}

impl SlidingWindow {
    pub fn new(window: Duration) -> SlidingWindow {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        SlidingWindow {
            slot_ms: (window_ms / SLOTS).max(MIN_SLOT_MS),
            slots: (0..RING).map(|_| Slot::default()).collect(),
        }
    }

    /// The slot for `now_ms`, claimed for its epoch; `None` if `now_ms` is
    /// so old that its slot already holds a newer epoch (record dropped).
    /// The sole writer of a stripe claims without a compare-and-swap.
    #[inline]
    fn slot(&self, now_ms: u64, exclusive: bool) -> Option<&Slot> {
        // Epochs start at 1 so a fresh slot (epoch 0) is never "current".
        let epoch = now_ms / self.slot_ms + 1;
        let slot = &self.slots[(epoch % RING as u64) as usize];
        let held = slot.epoch.load(Ordering::Acquire);
        if held == epoch {
            return Some(slot);
        }
        if held > epoch {
            return None;
        }
        if exclusive {
            // Zero first, then publish the epoch: a reader never counts the
            // old epoch's numbers as the new one's.
            slot.reset();
            slot.epoch.store(epoch, Ordering::Release);
            return Some(slot);
        }
        // Claim the slot for this epoch; only the winner of the swap resets.
        if slot
            .epoch
            .compare_exchange(held, epoch, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot.reset();
        }
        Some(slot)
    }

    #[inline]
    pub fn record(&self, now_ms: u64, class: StatusClass, latency_us: u64, exclusive: bool) {
        if let Some(slot) = self.slot(now_ms, exclusive) {
            bump(&slot.by_class[class as usize], 1, exclusive);
            slot.latency.record(latency_us, exclusive);
        }
    }

    #[inline]
    pub fn record_failure(&self, now_ms: u64, kind: FailureKind, exclusive: bool) {
        if let Some(slot) = self.slot(now_ms, exclusive) {
            bump(&slot.failures[kind as usize], 1, exclusive);
        }
    }

    /// Adds the sums over the window ending at `now_ms` into the arguments.
    pub fn add_sums(
        &self,
        now_ms: u64,
        by_class: &mut [u64; 5],
        failures: &mut [u64; 7],
        latency: &mut [u64],
    ) {
        let current = now_ms / self.slot_ms + 1;
        let oldest = current.saturating_sub(SLOTS - 1);
        for slot in self.slots.iter() {
            let epoch = slot.epoch.load(Ordering::Acquire);
            if epoch < oldest || epoch > current || epoch == 0 {
                continue;
            }
            for (sum, c) in by_class.iter_mut().zip(&slot.by_class) {
                *sum += c.load(Ordering::Relaxed);
            }
            for (sum, c) in failures.iter_mut().zip(&slot.failures) {
                *sum += c.load(Ordering::Relaxed);
            }
            slot.latency.add_to(latency);
        }
    }
}
