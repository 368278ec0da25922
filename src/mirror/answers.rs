//! The copies' answers, parsed no further than counting them needs: the
//! status code, and the framing that says where each answer ends so the
//! next pipelined answer on the connection can be found (RFC 9112 §6.3:
//! `Content-Length`, `Transfer-Encoding: chunked`, or the connection's
//! end; `Connection: close`). Every other header is stepped over as a
//! line, unread; the answers are thrown away.

use crate::dataplane::framing::parse_length;

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// An answer's head: its length in bytes, status, framing, and whether
/// the origin closes the connection after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    pub close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not all there yet.
    Partial,
    Head(Head),
    /// Not an HTTP/1.x answer, or framing that can't be trusted: the rest
    /// of the connection can't be told apart.
    Bad,
}

/// The first `\n` in `buf` at or after `from`, eight bytes at a time.
fn find_lf(buf: &[u8], from: usize) -> Option<usize> {
    const LF: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = from;
    while let Some(chunk) = buf.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ LF;
        // A zero byte of `x` is a `\n`; the lowest flagged byte is the
        // first one (a false flag only ever sits above a true one).
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    buf.get(at..)?
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| at + p)
}

/// The value of header line `line` (without its line end) if its name is
/// `name` (lower case letters and `-`, with the colon). The colon's place
/// is tested first: most lines fail there, before any letter is compared.
fn value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (field, rest) = line.split_at_checked(name.len())?;
    if field.last() != Some(&b':') {
        return None;
    }
    // `| 0x20` lowers a letter and keeps `-` and `:`; it also maps CR to
    // `-`, harmless: a field name has no CR.
    field
        .iter()
        .zip(name)
        .all(|(a, b)| a | 0x20 == *b)
        .then(|| rest.trim_ascii())
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The answer head at the start of `buf`; `head_method`: the copy was a
/// HEAD (its answer has no body whatever it says). Not inlined: its cost
/// shows apart in a profile.
#[inline(never)]
pub fn parse_head(buf: &[u8], head_method: bool) -> Parsed {
    // "HTTP/1.x NNN" first.
    let Some(start) = buf.get(..12) else {
        let prefix = b"HTTP/1.";
        let n = buf.len().min(prefix.len());
        return if buf[..n] == prefix[..n] {
            Parsed::Partial
        } else {
            Parsed::Bad
        };
    };
    if &start[..7] != b"HTTP/1." || !matches!(start[7], b'0' | b'1') || start[8] != b' ' {
        return Parsed::Bad;
    }
    let digits = &start[9..12];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Parsed::Bad;
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let mut close = start[7] == b'0';
    let mut length = None;
    let mut chunked = false;
    let Some(mut lf) = find_lf(buf, 12) else {
        return Parsed::Partial;
    };
    let len = loop {
        let line_start = lf + 1;
        let Some(next) = find_lf(buf, line_start) else {
            return Parsed::Partial;
        };
        lf = next;
        let line = &buf[line_start..next];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break next + 1;
        }
        // Only three names matter; their first letters pick the test.
        match line[0] | 0x20 {
            b'c' => {
                if let Some(v) = value(line, b"content-length:") {
                    match (parse_length(v), length) {
                        (Some(n), None) => length = Some(n),
                        (Some(n), Some(m)) if n == m => {}
                        _ => return Parsed::Bad,
                    }
                } else if let Some(v) = value(line, b"connection:") {
                    // `keep-alive`, the usual value, is no list to split.
                    close |= !v.eq_ignore_ascii_case(b"keep-alive") && has_token(v, b"close");
                }
            }
            b't' => {
                if let Some(v) = value(line, b"transfer-encoding:") {
                    chunked = v
                        .rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                    // Another coding last: the body ends with the connection.
                    close |= !chunked;
                }
            }
            _ => {}
        }
    };
    let framing = if (100..200).contains(&status) || head_method || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    Parsed::Head(Head {
        len,
        status,
        framing,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &[u8]) -> Head {
        match parse_head(text, false) {
            Parsed::Head(head) => head,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn status_and_framing_of_the_usual_answers() {
        let nginx = b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Wed, 02 Dec 2026 15:00:00 GMT\r\n\
                      Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nblue\n";
        let h = head(nginx);
        assert_eq!(
            (h.status, h.framing, h.close),
            (200, Framing::Length(5), false)
        );
        assert_eq!(&nginx[h.len..], b"blue\n");
        let h = head(b"HTTP/1.1 503 Busy\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.close),
            (503, Framing::Chunked, false)
        );
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let h = head(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Length(3), true));
        let h = head(b"HTTP/1.1 404 No\r\nCONNECTION: keep-alive, Close\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.close),
            (404, Framing::UntilClose, true)
        );
        let h = head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n");
        assert_eq!((h.status, h.framing, h.len), (100, Framing::Empty, 25));
        let h = head(b"HTTP/1.1 304 Not Modified\nContent-Length: 90\n\n");
        assert_eq!(h.framing, Framing::Empty);
        match parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 90\r\n\r\n", true) {
            Parsed::Head(h) => assert_eq!(h.framing, Framing::Empty),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_and_broken_heads() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        for cut in 0..whole.len() {
            assert_eq!(
                parse_head(&whole[..cut], false),
                Parsed::Partial,
                "cut {cut}"
            );
        }
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\n",
            b"HTTP",
        ] {
            let parsed = parse_head(bad, false);
            let expected = if bad == b"HTTP" {
                Parsed::Partial
            } else {
                Parsed::Bad
            };
            assert_eq!(parsed, expected, "{:?}", String::from_utf8_lossy(bad));
        }
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
    }

    #[test]
    fn line_ends_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                let mut buf = vec![b'x'; len];
                buf[at] = b'\n';
                for from in 0..=at {
                    assert_eq!(
                        find_lf(&buf, from),
                        Some(at),
                        "len {len} at {at} from {from}"
                    );
                }
                assert_eq!(find_lf(&buf, at + 1), None);
            }
        }
    }
}
