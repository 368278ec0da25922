//! One request thread's queue of copies: a single-producer,
//! single-consumer ring of 64-bit words, like the access log's
//! ([`crate::access_log::ring`]), with a consumer side made for the
//! mirror: it moves whole copies straight into a [`Batch`] — the bytes
//! the mirror connection writes in one go, and where each copy ends — and
//! stops at the batch's limits, leaving the rest queued. The ring itself
//! is the mirror's bounded queue: while every sender is busy nothing is
//! drained, it fills, and the request path drops (and counts) new copies.
//!
//! Words rather than bytes because the crate forbids `unsafe`: atomics are
//! the only safe shared memory. A copy is one length word, then its bytes,
//! zero-padded to whole words. The producer writes with relaxed stores and
//! publishes with one release store of the head: no lock, no syscall, no
//! allocation after the ring is made.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Queue {
    words: Box<[AtomicU64]>,
    /// `words.len() - 1` (the length is a power of two).
    mask: u64,
    /// Words written, ever. Only the producer stores it (release: the
    /// words before it are visible to a consumer that acquires it).
    head: AtomicU64,
    /// Words consumed, ever. Only the consumer stores it.
    tail: AtomicU64,
}

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
        let len = (bytes / 8).max(2).next_power_of_two();
        Queue {
            words: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len as u64 - 1,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }

    fn word(&self, at: u64) -> &AtomicU64 {
        &self.words[(at & self.mask) as usize]
    }

    /// Producer side: appends the concatenation of `parts` as one copy;
    /// `false` (and nothing written) when the consumer has not made room.
    pub fn push(&self, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let need = 1 + len.div_ceil(8) as u64;
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head - tail + need > self.mask + 1 {
            return false;
        }
        self.word(head).store(len as u64, Ordering::Relaxed);
        let mut at = head + 1;
        // The word in progress: `filled` bytes of it, little-endian.
        let mut word = 0u64;
        let mut filled = 0u32;
        for part in parts {
            let mut part: &[u8] = part;
            // Bytes one by one only to finish the word in progress at a
            // seam (at most 7); then whole words straight from the part.
            while filled > 0 && !part.is_empty() {
                word |= u64::from(part[0]) << (8 * filled);
                part = &part[1..];
                filled += 1;
                if filled == 8 {
                    self.word(at).store(word, Ordering::Relaxed);
                    at += 1;
                    (word, filled) = (0, 0);
                }
            }
            let mut chunks = part.chunks_exact(8);
            for chunk in &mut chunks {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(chunk);
                self.word(at)
                    .store(u64::from_le_bytes(bytes), Ordering::Relaxed);
                at += 1;
            }
            for byte in chunks.remainder() {
                word |= u64::from(*byte) << (8 * filled);
                filled += 1;
            }
        }
        if filled > 0 {
            self.word(at).store(word, Ordering::Relaxed);
            at += 1;
        }
        self.head.store(at, Ordering::Release);
        true
    }

    /// Consumer side: moves whole copies into `batch` until it holds
    /// `max_copies`, or the next copy would take its bytes past
    /// `max_bytes` (a batch's first copy always goes in), and frees their
    /// room. Returns how many it moved.
    #[inline(never)]
    pub fn drain_into(&self, batch: &mut Batch, max_copies: usize, max_bytes: usize) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let mut at = self.tail.load(Ordering::Relaxed);
        let mut moved = 0;
        // Room for what is queued (up to the limit) at once, not copy by copy.
        let queued = usize::try_from((head - at) * 8).unwrap_or(usize::MAX);
        batch.bytes.reserve(queued.min(max_bytes));
        batch.ends.reserve(max_copies.min(64));
        while at < head && batch.len() < max_copies {
            let len = self.word(at).load(Ordering::Relaxed) as usize;
            if !batch.is_empty() && batch.bytes.len() + len > max_bytes {
                break;
            }
            at += 1;
            let words = len.div_ceil(8) as u64;
            let start = batch.bytes.len();
            batch.bytes.resize(start + words as usize * 8, 0);
            for (from, out) in (at..).zip(batch.bytes[start..].chunks_exact_mut(8)) {
                let word = self.word(from).load(Ordering::Relaxed);
                out.copy_from_slice(&word.to_le_bytes());
            }
            // The last word's padding is not the copy's.
            batch.bytes.truncate(start + len);
            batch
                .ends
                .push(u32::try_from(batch.bytes.len()).unwrap_or(u32::MAX));
            at += words;
            moved += 1;
        }
        self.tail.store(at, Ordering::Release);
        moved
    }

    /// Nothing waits to be drained.
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, Queue};
    use std::sync::Arc;

    #[test]
    fn copies_come_out_whole_in_order_across_the_wrap_and_seams() {
        let queue = Queue::new(128); // 16 words
        let whole: Vec<u8> = (0..40u8).collect();
        for round in 0..30usize {
            let cut = round % 41;
            let (a, rest) = whole.split_at(cut);
            let (b, c) = rest.split_at(rest.len() / 2);
            let len = round % 13;
            assert!(queue.push(&[&a[..cut.min(len)], b, c]), "round {round}");
            let mut expected = a[..cut.min(len)].to_vec();
            expected.extend_from_slice(b);
            expected.extend_from_slice(c);
            let mut batch = Batch::default();
            assert_eq!(queue.drain_into(&mut batch, 64, 1 << 20), 1);
            assert_eq!(batch.copy(0), &expected[..], "round {round}");
            assert!(queue.is_empty());
        }
    }

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

    #[test]
    fn a_full_queue_refuses_instead_of_overwriting() {
        let queue = Queue::new(64); // 8 words: 4 copies of 2 words fit
        for copy in [b"12345678", b"abcdefgh", b"ABCDEFGH", b"87654321"] {
            assert!(queue.push(&[copy]));
        }
        assert!(!queue.push(&[b"too much"]));
        let mut batch = Batch::default();
        assert_eq!(queue.drain_into(&mut batch, 64, 1 << 20), 4);
        assert_eq!(batch.bytes, b"12345678abcdefghABCDEFGH87654321");
        assert!(queue.push(&[b"room again"]));
    }

    #[test]
    fn a_consumer_thread_sees_every_copy_a_producer_pushed() {
        let queue = Arc::new(Queue::new(1024));
        let producer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let copy = format!("copy {i:07}\n");
                    for _ in 0..10_000_000 {
                        if queue.push(&[copy.as_bytes()]) {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut all = Batch::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while all.len() < 20_000 && std::time::Instant::now() < deadline {
            queue.drain_into(&mut all, usize::MAX, usize::MAX);
            std::thread::yield_now();
        }
        let _ = producer.join();
        assert_eq!(all.len(), 20_000);
        for i in 0..20_000 {
            assert_eq!(all.copy(i), format!("copy {i:07}\n").as_bytes());
        }
    }
}
