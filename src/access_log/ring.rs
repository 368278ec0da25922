//! One request thread's queue of finished log lines: a single-producer,
//! single-consumer ring of 64-bit words. The request thread appends a
//! line with plain relaxed stores and one release store of the head; the
//! writer thread drains it on its own schedule. No lock, no syscall, no
//! allocation after the ring is made, and a full ring refuses the line
//! (the caller counts it dropped) instead of waiting.
//!
//! Words rather than bytes because the crate forbids `unsafe`: atomics are
//! the only safe shared memory, and one `AtomicU64` store per 8 bytes keeps
//! the copy short. A line is one length word followed by its bytes,
//! zero-padded to whole words.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Ring {
    words: Box<[AtomicU64]>,
    /// `words.len() - 1` (the length is a power of two).
    mask: u64,
    /// Words written, ever. Only the producer stores it (release: the
    /// words before it are visible to a consumer that acquires it).
    head: AtomicU64,
    /// Words consumed, ever. Only the consumer stores it.
    tail: AtomicU64,
}

impl Ring {
    /// A ring of at least `bytes` bytes (rounded up to a power of two).
    pub fn new(bytes: usize) -> Ring {
        let len = (bytes / 8).max(2).next_power_of_two();
        Ring {
            words: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len as u64 - 1,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
        }
    }

    fn word(&self, at: u64) -> &AtomicU64 {
        &self.words[(at & self.mask) as usize]
    }

    /// Producer side: appends `line`; `false` (and nothing written) when
    /// the consumer has not made room for it.
    pub fn push(&self, line: &[u8]) -> bool {
        self.push_parts(&[line])
    }

    /// [`Ring::push`] of the concatenation of `parts`, without making it
    /// (the mirror's copies are a prefix, a head and a body).
    pub fn push_parts(&self, parts: &[&[u8]]) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let need = 1 + len.div_ceil(8) as u64;
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head - tail + need > self.mask + 1 {
            return false;
        }
        self.word(head).store(len as u64, Ordering::Relaxed);
        let mut at = head + 1;
        let mut word = [0u8; 8];
        let mut filled = 0;
        for part in parts {
            let mut part: &[u8] = part;
            // Whole words straight from the part once the word in
            // progress is empty; bytes one by one only at the seams.
            while !part.is_empty() {
                if filled == 0 && part.len() >= 8 {
                    let mut chunks = part.chunks_exact(8);
                    for chunk in &mut chunks {
                        word.copy_from_slice(chunk);
                        self.word(at)
                            .store(u64::from_le_bytes(word), Ordering::Relaxed);
                        at += 1;
                    }
                    part = chunks.remainder();
                    continue;
                }
                let n = (8 - filled).min(part.len());
                word[filled..filled + n].copy_from_slice(&part[..n]);
                filled += n;
                part = &part[n..];
                if filled == 8 {
                    self.word(at)
                        .store(u64::from_le_bytes(word), Ordering::Relaxed);
                    at += 1;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            word[filled..].fill(0);
            self.word(at)
                .store(u64::from_le_bytes(word), Ordering::Relaxed);
            at += 1;
        }
        self.head.store(at, Ordering::Release);
        true
    }

    /// Consumer side: appends every line published so far to `out` and
    /// frees their room. Returns how many lines it took.
    pub fn drain_into(&self, out: &mut Vec<u8>) -> u64 {
        let head = self.head.load(Ordering::Acquire);
        let mut at = self.tail.load(Ordering::Relaxed);
        let mut lines = 0;
        while at < head {
            let mut left = self.word(at).load(Ordering::Relaxed) as usize;
            at += 1;
            while left > 0 {
                let bytes = self.word(at).load(Ordering::Relaxed).to_le_bytes();
                let n = left.min(8);
                out.extend_from_slice(&bytes[..n]);
                left -= n;
                at += 1;
            }
            lines += 1;
        }
        self.tail.store(at, Ordering::Release);
        lines
    }

    /// Nothing waits to be drained.
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;
    use std::sync::Arc;

    #[test]
    fn lines_come_out_whole_and_in_order_across_the_wrap() {
        let ring = Ring::new(64); // 8 words
        let mut out = Vec::new();
        for round in 0..20u8 {
            let line = vec![b'a' + round % 26; (round % 13) as usize];
            assert!(ring.push(&line), "round {round}");
            assert_eq!(ring.drain_into(&mut out), 1);
            assert_eq!(out, line);
            out.clear();
        }
        assert!(ring.is_empty());
    }

    #[test]
    fn parts_come_out_as_one_line_whatever_their_seams() {
        let ring = Ring::new(256);
        let mut out = Vec::new();
        let whole: Vec<u8> = (0..40u8).collect();
        for cut in [0, 1, 7, 8, 9, 15, 16, 17, 40] {
            let (a, rest) = whole.split_at(cut.min(whole.len()));
            let (b, c) = rest.split_at(rest.len() / 2);
            assert!(ring.push_parts(&[a, b, c]), "cut {cut}");
            assert_eq!(ring.drain_into(&mut out), 1);
            assert_eq!(out, whole, "cut {cut}");
            out.clear();
        }
    }

    #[test]
    fn a_full_ring_refuses_instead_of_overwriting() {
        let ring = Ring::new(64); // 8 words: 4 lines of 2 words each fit
        assert!(ring.push(b"12345678"));
        assert!(ring.push(b"abcdefgh"));
        assert!(ring.push(b"ABCDEFGH"));
        assert!(ring.push(b"87654321"));
        assert!(!ring.push(b"too much"));
        let mut out = Vec::new();
        assert_eq!(ring.drain_into(&mut out), 4);
        assert_eq!(out, b"12345678abcdefghABCDEFGH87654321");
        assert!(ring.push(b"room again"));
    }

    #[test]
    fn a_consumer_thread_sees_every_line_a_producer_pushed() {
        let ring = Arc::new(Ring::new(1024));
        let producer = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                let mut refused = 0u64;
                for i in 0..20_000u32 {
                    let line = format!("line {i:07}\n");
                    while !ring.push(line.as_bytes()) {
                        refused += 1;
                        std::thread::yield_now();
                    }
                }
                refused
            })
        };
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while out.len() < 20_000 * 13 && std::time::Instant::now() < deadline {
            ring.drain_into(&mut out);
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
