//! The buffers of a connection while it has a request on. Between requests
//! they go back to a per-thread spare list, so an idle connection holds none
//! and a busy one allocates none.

use std::cell::RefCell;

/// A request head must fit in this to take the fast path (larger ones go to
/// pingora, which allows more).
const CLIENT_BUFFER: usize = 16 * 1024;
/// Upstream reads: a response head must fit; bodies stream through it.
const UPSTREAM_BUFFER: usize = 16 * 1024;
/// Spare scratch sets kept per thread (about 34 KiB each).
const SPARE_PER_THREAD: usize = 64;
/// A head buffer that grew past this (a huge header) is not kept.
const OUT_KEEP: usize = 64 * 1024;

pub(super) struct Scratch {
    pub client: Box<[u8]>,
    pub upstream: Box<[u8]>,
    /// Heads being written (and, on a retry, the request to send again).
    pub out: Vec<u8>,
    /// The request's access log fields.
    pub log: crate::access_log::Capture,
}

thread_local! {
    static SPARE: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

impl Scratch {
    pub fn take() -> Scratch {
        SPARE
            .with(|spare| spare.borrow_mut().pop())
            .unwrap_or_else(|| Scratch {
                client: vec![0; CLIENT_BUFFER].into_boxed_slice(),
                upstream: vec![0; UPSTREAM_BUFFER].into_boxed_slice(),
                out: Vec::with_capacity(4096),
                log: crate::access_log::Capture::new(),
            })
    }

    pub fn give_back(self) {
        if self.out.capacity() > OUT_KEEP {
            return;
        }
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_PER_THREAD {
                spare.push(self);
            }
        });
    }
}
