//! One request thread's queue of copies: a [`WordRing`] whose records
//! are whole request copies, with a consumer side made for the mirror: it
//! moves whole copies straight into a [`Batch`] — the bytes the mirror
//! connection writes in one go, and where each copy ends — and stops at
//! the batch's limits, leaving the rest queued. The ring itself is the
//! mirror's bounded queue: while every sender is busy nothing is drained,
//! it fills, and the request path drops (and counts) new copies.

use crate::word_ring::WordRing;

pub struct Queue(WordRing);

/// Copies drained together, sent together on one mirror connection: their
/// bytes back to back (each a whole HTTP/1.1 request) and each one's end.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where copy `i` starts in [`Batch::bytes`].
    pub fn start(&self, i: usize) -> usize {
        match i.checked_sub(1) {
            Some(before) => self
                .ends
                .get(before)
                .map_or(self.bytes.len(), |e| *e as usize),
            None => 0,
        }
    }

    /// Copy `i`'s bytes (empty past the last).
    pub fn copy(&self, i: usize) -> &[u8] {
        let end = self.ends.get(i).map_or(self.bytes.len(), |e| *e as usize);
        self.bytes.get(self.start(i)..end).unwrap_or_default()
    }

    /// Appends one copy (tests and the queue's drain).
    pub fn push(&mut self, copy: &[u8]) {
        self.bytes.extend_from_slice(copy);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }
}

impl Queue {
    /// A ring of at least `bytes` bytes (rounded up to a power of two).
    pub fn new(bytes: usize) -> Queue {
        Queue(WordRing::new(bytes))
    }

    /// Producer side: appends the concatenation of `parts` as one copy;
    /// `false` (and nothing written) when the consumer has not made room.
    pub fn push(&self, parts: &[&[u8]]) -> bool {
        self.0.push(parts)
    }

    /// Consumer side: moves whole copies into `batch` until it holds
    /// `max_copies`, or the next copy would take its bytes past
    /// `max_bytes` (a batch's first copy always goes in), and frees their
    /// room. Returns how many it moved.
    #[inline(never)]
    pub fn drain_into(&self, batch: &mut Batch, max_copies: usize, max_bytes: usize) -> usize {
        // Room for what is queued (up to the limit) at once, not copy by copy.
        batch.bytes.reserve(self.0.queued_bytes().min(max_bytes));
        batch.ends.reserve(max_copies.min(64));
        let ends = &mut batch.ends;
        self.0.drain_into(&mut batch.bytes, |filled, len| {
            let fits = ends.is_empty() || filled + len <= max_bytes;
            if ends.len() >= max_copies || !fits {
                return false;
            }
            ends.push(u32::try_from(filled + len).unwrap_or(u32::MAX));
            true
        })
    }

    /// Nothing waits to be drained.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, Queue};

    // The ring's own cases (wrap-around, seams, a full ring refusing, two
    // threads) are `word_ring`'s; this is the mirror's batch limits.

    #[test]
    fn a_drain_stops_at_the_batch_limits_and_leaves_the_rest_queued() {
        let queue = Queue::new(1024);
        for i in 0..10u8 {
            assert!(queue.push(&[&[b'a' + i; 10]]));
        }
        let mut batch = Batch::default();
        assert_eq!(queue.drain_into(&mut batch, 3, 1 << 20), 3);
        assert_eq!(batch.bytes, b"aaaaaaaaaabbbbbbbbbbcccccccccc");
        assert_eq!((batch.start(1), batch.copy(2)), (10, &b"cccccccccc"[..]));
        let mut batch = Batch::default();
        assert_eq!(queue.drain_into(&mut batch, 64, 25), 2);
        assert_eq!(batch.bytes, b"ddddddddddeeeeeeeeee");
        // A first copy longer than the byte limit still goes, alone.
        let mut batch = Batch::default();
        assert_eq!(queue.drain_into(&mut batch, 64, 5), 1);
        let mut batch = Batch::default();
        assert_eq!(queue.drain_into(&mut batch, 64, 1 << 20), 4);
        assert!(queue.is_empty());
    }
}
