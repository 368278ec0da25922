//! The fast path's chunked-body scanner on a request body: the bytes after
//! a client's head, as they arrive. Input: one byte giving how the body is
//! cut into reads, then the body.
//!
//! Properties (see `check_chunked`): the scanner never ends a message past
//! the bytes it was given; where it ends does not depend on how the bytes
//! were cut into reads; and it frames every body that a strict reference
//! reading of RFC 9112 accepts exactly where the reference does (and never
//! ends a valid unfinished body early).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some((&cut, body)) = bytes.split_first() else {
        return;
    };
    // Pieces of 1..=16 bytes, varying with the byte.
    let cuts = [cut % 16 + 1, cut / 16 + 1, 1, 3];
    switchyard_fuzz::check_chunked(body, &cuts);
});
