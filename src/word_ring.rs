//! A single-producer, single-consumer ring of 64-bit words holding whole
//! byte records: the one ring under the access log's per-thread line
//! queues ([`crate::access_log::ring`]) and the mirror's per-thread copy
//! queues ([`crate::mirror::queue`]); what a drain takes (every line, or a
//! batch up to its limits) is each caller's policy, in its own file.
//!
//! The producer appends a record with relaxed stores and publishes it with
//! one release store of the head; the consumer drains on its own schedule.
//! No lock, no syscall, no allocation after the ring is made, and a full
//! ring refuses the record (the caller counts it dropped) instead of waiting.
//!
//! Words rather than bytes because the crate forbids `unsafe`: atomics are
//! the only safe shared memory, and one `AtomicU64` store per 8 bytes keeps
//! the copy short. A record is one length word followed by its bytes,
//! zero-padded to whole words.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct WordRing {
    words: Box<[AtomicU64]>,
    /// `words.len() - 1` (the length is a power of two).
    mask: u64,
    /// Words written, ever. Only the producer stores it (release: the
    /// words before it are visible to a consumer that acquires it).
    head: AtomicU64,
    /// Words consumed, ever. Only the consumer stores it.
    tail: AtomicU64,
}

impl WordRing {
    /// A ring of at least `bytes` bytes (rounded up to a power of two).
    pub fn new(bytes: usize) -> WordRing {
        let len = (bytes / 8).max(2).next_power_of_two();
        WordRing {
            words: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len as u64 - 1,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }

    fn word(&self, at: u64) -> &AtomicU64 {
        &self.words[(at & self.mask) as usize]
    }

    /// Producer side: appends the concatenation of `pieces` as one record,
    /// without making it; `false` (and nothing written) when the consumer
    /// has not made room for it.
    pub fn push(&self, pieces: &[&[u8]]) -> bool {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
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
        for piece in pieces {
            let mut piece: &[u8] = piece;
            // Bytes one by one only to finish the word in progress at a
            // seam (at most 7); then whole words straight from the piece.
            while filled > 0 && !piece.is_empty() {
                word |= u64::from(piece[0]) << (8 * filled);
                piece = &piece[1..];
                filled += 1;
                if filled == 8 {
                    self.word(at).store(word, Ordering::Relaxed);
                    at += 1;
                    (word, filled) = (0, 0);
                }
            }
            let mut chunks = piece.chunks_exact(8);
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

    /// Consumer side: an upper bound on the bytes published and not yet
    /// drained (length words and padding included), for reserving room
    /// at once rather than record by record.
    pub fn queued_bytes(&self) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Relaxed);
        usize::try_from((head - tail) * 8).unwrap_or(usize::MAX)
    }

    /// Consumer side: for each record published so far, in order, asks
    /// `take(out.len(), record_len)`; on `true` appends the record's bytes
    /// to `out`, on `false` stops and leaves it and the rest queued. Frees
    /// the room of the records taken and returns how many it took.
    #[inline]
    pub fn drain_into(
        &self,
        out: &mut Vec<u8>,
        mut take: impl FnMut(usize, usize) -> bool,
    ) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let mut at = self.tail.load(Ordering::Relaxed);
        let mut taken = 0;
        while at < head {
            let len = self.word(at).load(Ordering::Relaxed) as usize;
            if !take(out.len(), len) {
                break;
            }
            at += 1;
            let words = len.div_ceil(8) as u64;
            let start = out.len();
            out.resize(start + words as usize * 8, 0);
            for (from, bytes) in (at..).zip(out[start..].chunks_exact_mut(8)) {
                let word = self.word(from).load(Ordering::Relaxed);
                bytes.copy_from_slice(&word.to_le_bytes());
            }
            // The last word's padding is not the record's.
            out.truncate(start + len);
            at += words;
            taken += 1;
        }
        self.tail.store(at, Ordering::Release);
        taken
    }

    /// Nothing waits to be drained.
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::WordRing;
    use std::sync::Arc;

    fn drain_all(ring: &WordRing, out: &mut Vec<u8>) -> usize {
        ring.drain_into(out, |_, _| true)
    }

    #[test]
    fn records_come_out_whole_and_in_order_across_the_wrap() {
        let ring = WordRing::new(64); // 8 words
        let mut out = Vec::new();
        for round in 0..20u8 {
            let line = vec![b'a' + round % 26; (round % 13) as usize];
            assert!(ring.push(&[&line]), "round {round}");
            assert_eq!(drain_all(&ring, &mut out), 1);
            assert_eq!(out, line);
            out.clear();
        }
        assert!(ring.is_empty());
    }

    #[test]
    fn pieces_come_out_as_one_record_whatever_their_seams() {
        let ring = WordRing::new(128); // 16 words
        let mut out = Vec::new();
        let whole: Vec<u8> = (0..40u8).collect();
        for round in 0..60usize {
            let cut = round % 41;
            let (a, rest) = whole.split_at(cut);
            let (b, c) = rest.split_at(rest.len() / 2);
            let a = &a[..cut.min(round % 13)];
            assert!(ring.push(&[a, b, c]), "round {round}");
            assert_eq!(drain_all(&ring, &mut out), 1);
            assert_eq!(out, [a, b, c].concat(), "round {round}");
            out.clear();
            assert!(ring.is_empty());
        }
    }

    #[test]
    fn a_drain_stops_where_the_caller_says_and_leaves_the_rest_queued() {
        let ring = WordRing::new(256);
        for piece in [&b"one"[..], b"two", b"three"] {
            assert!(ring.push(&[piece]));
        }
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let taken = ring.drain_into(&mut out, |filled, len| {
            seen.push((filled, len));
            filled + len <= 6
        });
        assert_eq!((taken, &out[..]), (2, &b"onetwo"[..]));
        assert_eq!(seen, [(0, 3), (3, 3), (6, 5)]);
        assert!(!ring.is_empty());
        assert!(ring.queued_bytes() >= 5);
        out.clear();
        assert_eq!(drain_all(&ring, &mut out), 1);
        assert_eq!((&out[..], ring.queued_bytes()), (&b"three"[..], 0));
    }

    #[test]
    fn a_full_ring_refuses_instead_of_overwriting() {
        let ring = WordRing::new(64); // 8 words: 4 records of 2 words fit
        for record in [b"12345678", b"abcdefgh", b"ABCDEFGH", b"87654321"] {
            assert!(ring.push(&[record]));
        }
        assert!(!ring.push(&[b"too much"]));
        let mut out = Vec::new();
        assert_eq!(drain_all(&ring, &mut out), 4);
        assert_eq!(out, b"12345678abcdefghABCDEFGH87654321");
        assert!(ring.push(&[b"room again"]));
    }

    #[test]
    fn a_consumer_thread_sees_every_record_a_producer_pushed() {
        let ring = Arc::new(WordRing::new(1024));
        let producer = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let line = format!("line {i:07}\n");
                    for _ in 0..10_000_000 {
                        if ring.push(&[line.as_bytes()]) {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while out.len() < 20_000 * 13 && std::time::Instant::now() < deadline {
            drain_all(&ring, &mut out);
            std::thread::yield_now();
        }
        let _ = producer.join();
        let text = String::from_utf8(out).unwrap();
        for (i, line) in text.lines().enumerate() {
            assert_eq!(line, format!("line {i:07}"));
        }
        assert_eq!(text.lines().count(), 20_000);
    }
}
