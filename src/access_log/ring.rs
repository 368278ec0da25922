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
        let need = 1 + line.len().div_ceil(8) as u64;
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head - tail + need > self.mask + 1 {
            return false;
        }
        self.word(head).store(line.len() as u64, Ordering::Relaxed);
        let mut at = head + 1;
        let mut chunks = line.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(at)
                .store(u64::from_le_bytes(word), Ordering::Relaxed);
            at += 1;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
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
