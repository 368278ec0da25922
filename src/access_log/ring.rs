//! One request thread's queue of finished log lines: a
//! [`WordRing`] whose records are lines. The request thread appends a line
//! (no lock, no syscall, no allocation; a full ring refuses it and the
//! caller counts it dropped); the writer thread drains every line queued
//! so far into its buffer and counts them.

use crate::word_ring::WordRing;

pub struct Ring(WordRing);

impl Ring {
    /// A ring of at least `bytes` bytes (rounded up to a power of two).
    pub fn new(bytes: usize) -> Ring {
        Ring(WordRing::new(bytes))
    }

    /// Producer side: appends `line`; `false` (and nothing written) when
    /// the consumer has not made room for it.
    pub fn push(&self, line: &[u8]) -> bool {
        self.0.push(&[line])
    }

    /// Consumer side: appends every line published so far to `out` and
    /// frees their room. Returns how many lines it took.
    pub fn drain_into(&self, out: &mut Vec<u8>) -> u64 {
        self.0.drain_into(out, |_, _| true) as u64
    }

    /// Nothing waits to be drained.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    // The ring's own cases (wrap-around, seams, a full ring, two threads)
    // are `word_ring`'s; this is the access log's side of it.
    #[test]
    fn lines_come_out_back_to_back_and_counted() {
        let ring = Ring::new(64); // 8 words: 4 lines of 2 words each fit
        assert!(ring.push(b"12345678"));
        assert!(ring.push(b"abc\n"));
        assert!(ring.push(b""));
        assert!(ring.push(b"ABCDEFGH"));
        assert!(!ring.push(b"too much"));
        let mut out = b"kept ".to_vec();
        assert_eq!(ring.drain_into(&mut out), 4);
        assert_eq!(out, b"kept 12345678abc\nABCDEFGH");
        assert!(ring.is_empty());
        assert_eq!(ring.drain_into(&mut out), 0);
    }
}
