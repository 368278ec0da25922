//! The buffers of a connection while it has a request on. Between requests
//! they go back to a per-thread spare list, so an idle connection holds none
//! and a busy one allocates none.
//!
//! The spare list is sized by the connections that are busy, not by a
//! fixed count: every set given back is kept, so a thread that had N
//! requests on at once keeps N sets and, at that concurrency again,
//! allocates none (a fixed 64 meant two zero-filled 16 KiB buffers per
//! request past 64 busy connections). Sets no request took for a whole
//! trim window (`TRIM_WINDOW_MS`) are freed: a burst's buffers don't stay for good.

use std::cell::RefCell;

use crate::stats::now_ms;

/// A request head must fit in this to take the fast path (larger ones go to
/// pingora, which allows more).
const CLIENT_BUFFER: usize = 16 * 1024;
/// Upstream reads: a response head must fit; bodies stream through it.
const UPSTREAM_BUFFER: usize = 16 * 1024;
/// Spare scratch sets kept per thread at most (about 34 KiB each): 4 096
/// busy connections per thread before a request allocates.
const SPARE_MAX: usize = 4096;
/// A head buffer that grew past this (a huge header) is not kept.
const OUT_KEEP: usize = 64 * 1024;
/// Sets that stayed spare this long (none of them was taken) are freed.
const TRIM_WINDOW_MS: u64 = 10_000;

pub(super) struct Scratch {
    pub client: Box<[u8]>,
    pub upstream: Box<[u8]>,
    /// Heads being written (and, on a retry, the request to send again).
    pub out: Vec<u8>,
    /// The request's access log fields.
    pub log: crate::access_log::Capture,
}

/// One thread's spare sets, and how few of them were spare at the least
/// in the current trim window (those were never needed in it).
struct Spare {
    sets: Vec<Scratch>,
    fewest: usize,
    window_ends_ms: u64,
    /// Sets given back since the clock was last read: it is read once
    /// every [`CLOCK_EVERY`] (a trim window is seconds long).
    given: u32,
}

const CLOCK_EVERY: u32 = 64;

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            sets: Vec::new(),
            fewest: 0,
            window_ends_ms: 0,
            given: 0,
        })
    };
}

impl Scratch {
    pub fn take() -> Scratch {
        let spare = SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            let set = spare.sets.pop();
            spare.fewest = spare.fewest.min(spare.sets.len());
            set
        });
        spare.unwrap_or_else(Scratch::new)
    }

    /// A new set. Zeroed memory: mimalloc hands fresh pages over already
    /// zero, and this runs only when more connections than ever are busy
    /// at once on this thread.
    #[cold]
    fn new() -> Scratch {
        Scratch {
            client: vec![0; CLIENT_BUFFER].into_boxed_slice(),
            upstream: vec![0; UPSTREAM_BUFFER].into_boxed_slice(),
            out: Vec::with_capacity(4096),
            log: crate::access_log::Capture::new(),
        }
    }

    pub fn give_back(self) {
        if self.out.capacity() > OUT_KEEP {
            return;
        }
        // Freed after the borrow ends (a drop never runs under it).
        let trimmed = SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            spare.given += 1;
            let trimmed = if spare.given >= CLOCK_EVERY {
                spare.given = 0;
                spare.trim(now_ms())
            } else {
                Vec::new()
            };
            if spare.sets.len() < SPARE_MAX {
                spare.sets.push(self);
            }
            trimmed
        });
        drop(trimmed);
    }
}

impl Spare {
    /// At the end of a window, the sets no request needed in it (the
    /// fewest spare at any moment) come off the list.
    fn trim(&mut self, now_ms: u64) -> Vec<Scratch> {
        if now_ms < self.window_ends_ms {
            return Vec::new();
        }
        let unused = self.fewest.min(self.sets.len());
        let keep = self.sets.len() - unused;
        self.window_ends_ms = now_ms + TRIM_WINDOW_MS;
        self.fewest = keep;
        if unused == 0 {
            return Vec::new();
        }
        self.sets.split_off(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare_of(n: usize) -> Spare {
        Spare {
            sets: (0..n).map(|_| Scratch::new()).collect(),
            fewest: n,
            window_ends_ms: 1_000,
            given: 0,
        }
    }

    #[test]
    fn sets_unused_for_a_whole_window_are_freed() {
        let mut spare = spare_of(8);
        // Within the window: nothing goes.
        assert!(spare.trim(500).is_empty());
        // 3 of 8 were taken at once at some point: 5 were never needed.
        spare.fewest = 5;
        let freed = spare.trim(1_000);
        assert_eq!(freed.len(), 5);
        assert_eq!(spare.sets.len(), 3);
        // A window in which all three stayed spare frees them too.
        assert_eq!(spare.trim(1_000 + TRIM_WINDOW_MS).len(), 3);
        assert!(spare.sets.is_empty());
    }

    #[test]
    fn sets_in_use_every_window_stay() {
        let mut spare = spare_of(4);
        spare.fewest = 0;
        assert!(spare.trim(1_000).is_empty());
        assert_eq!(spare.sets.len(), 4);
    }
}
