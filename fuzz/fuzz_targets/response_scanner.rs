//! pingora's path's upstream response scanner
//! (`dataplane::framing::response::ResponseScanner`, what the strict
//! upstream sockets run over every byte an origin sends). Input: one byte
//! of options (bit 0: the request was a HEAD; the rest: where the bytes are
//! cut into reads), then the origin's bytes.
//!
//! Properties: a response taken as whole ends within the input and after
//! at least one byte; its end needs no lookahead (its bytes alone end at
//! the same place, one byte fewer never ends); the verdict (end, refusal,
//! still waiting), reusability and the end-of-stream outcome are the same
//! however the bytes are cut into reads — split once at every point, and
//! cut into reads of the option's sizes; a refusal is final (any further
//! bytes are refused too).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::dataplane::framing::response::{Fed, ResponseScanner};

/// What the scanner made of the bytes: where the response ended (from the
/// start of the input), or a refusal, or neither yet; then whether its
/// connection can be reused, and whether an end of stream right after ends
/// it.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    end: Result<Option<usize>, &'static str>,
    reusable: bool,
    done_at_eof: bool,
}

/// Feeds `bytes` in the pieces `cuts` gives (sizes, cycled; 0 counts as 1).
fn scan(bytes: &[u8], head: bool, cuts: &mut dyn Iterator<Item = usize>) -> Verdict {
    let mut scanner = ResponseScanner::new(head);
    let mut offset = 0;
    let mut end = Ok(None);
    while offset < bytes.len() {
        let size = cuts.next().unwrap_or(bytes.len()).max(1);
        let piece = &bytes[offset..bytes.len().min(offset + size)];
        match scanner.feed(piece) {
            Ok(Fed::More) => {
                assert!(!scanner.done(), "More but done");
            }
            Ok(Fed::End(at)) => {
                assert!(at <= piece.len(), "end {at} past the read of {}", piece.len());
                assert!(scanner.done(), "End but not done");
                end = Ok(Some(offset + at));
                break;
            }
            Err(bad) => {
                // Final: whatever comes next is refused too.
                assert_eq!(scanner.feed(b"HTTP/1.1 200 OK\r\n\r\n"), Err(bad));
                assert!(!scanner.done());
                end = Err(bad.0);
                break;
            }
        }
        offset += piece.len();
    }
    let reusable = scanner.reusable();
    if matches!(end, Ok(None)) {
        scanner.eof();
    }
    Verdict {
        end,
        reusable,
        done_at_eof: scanner.done(),
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&options, origin)) = bytes.split_first() else {
        return;
    };
    let head = options & 1 != 0;
    let whole = scan(origin, head, &mut std::iter::empty());

    if let Ok(Some(end)) = whole.end {
        assert!(end > 0 && end <= origin.len(), "end {end} of {}", origin.len());
        // No lookahead: the response's own bytes end it at the same place ...
        let alone = scan(&origin[..end], head, &mut std::iter::empty());
        assert_eq!(alone.end, Ok(Some(end)));
        assert_eq!(alone.reusable, whole.reusable);
        // ... and one byte fewer is not yet a response.
        let short = scan(&origin[..end - 1], head, &mut std::iter::empty());
        assert_eq!(short.end, Ok(None), "ended before its last byte");
    }

    // Split once at every point (every 1/64th on long inputs, to keep a run
    // fast), then cut by the option's sizes: the same verdict.
    let step = (origin.len() / 64).max(1);
    for at in (1..origin.len()).step_by(step) {
        let split = scan(origin, head, &mut [at, origin.len()].into_iter());
        assert_eq!(split, whole, "split at {at}");
    }
    let sizes = [usize::from(options >> 1) % 8 + 1, usize::from(options >> 4) + 1, 1];
    let cut = scan(origin, head, &mut sizes.into_iter().cycle());
    assert_eq!(cut, whole, "cut into reads of {sizes:?}");
});
