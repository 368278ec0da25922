//! What the fuzz targets share: a strict reference reader of chunked
//! bodies to compare the fast path's scanner with, and the scanner driven
//! over an input cut into pieces.

use switchyard::dataplane::fastpath::parsers::{BadChunk, ChunkedScanner};

/// Where a chunked body ends by the reference reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Reference {
    /// A complete body: the message ends after this many bytes.
    Complete(usize),
    /// Valid so far, not finished.
    Incomplete,
    /// Not in the reference's language. No claim: the reference is
    /// narrower than RFC 9112 (see [`reference_end`]).
    Outside,
}

/// A deliberately narrow reading of RFC 9112 §7.1, so that everything it
/// calls complete or incomplete is valid HTTP that any conforming scanner,
/// however strict, must frame the same way: at most 8 size digits, chunk
/// extensions without whitespace of at most 32 bytes a line, at most 4
/// trailer lines with ASCII token names (not the framing fields) and
/// visible-ASCII values.
pub fn reference_end(bytes: &[u8]) -> Reference {
    let mut r = Reader { bytes, at: 0 };
    match r.body() {
        Ok(()) => Reference::Complete(r.at),
        Err(Stop::Incomplete) => Reference::Incomplete,
        Err(Stop::Outside) => Reference::Outside,
    }
}

enum Stop {
    Incomplete,
    Outside,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.bytes.get(self.at).copied().ok_or(Stop::Incomplete)
    }

    fn take(&mut self, want: u8) -> Result<(), Stop> {
        if self.peek()? == want {
            self.at += 1;
            Ok(())
        } else {
            Err(Stop::Outside)
        }
    }

    fn crlf(&mut self) -> Result<(), Stop> {
        self.take(b'\r')?;
        self.take(b'\n')
    }

    /// 1*n of `class`.
    fn run(&mut self, class: impl Fn(u8) -> bool, max: usize) -> Result<usize, Stop> {
        let start = self.at;
        while class(self.peek()?) {
            self.at += 1;
            if self.at - start > max {
                return Err(Stop::Outside);
            }
        }
        if self.at == start {
            return Err(Stop::Outside);
        }
        Ok(self.at - start)
    }

    fn body(&mut self) -> Result<(), Stop> {
        loop {
            let start = self.at;
            self.run(|b| b.is_ascii_hexdigit(), 8)?;
            let digits =
                std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| Stop::Outside)?;
            let size = u64::from_str_radix(digits, 16).map_err(|_| Stop::Outside)?;
            self.extensions()?;
            self.crlf()?;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size).map_err(|_| Stop::Outside)?;
            if self.bytes.len() - self.at < size {
                return Err(Stop::Incomplete);
            }
            self.at += size;
            self.crlf()?;
        }
        let mut trailers = 0;
        while self.peek()? != b'\r' {
            if trailers == 4 {
                return Err(Stop::Outside);
            }
            self.trailer()?;
            trailers += 1;
        }
        self.crlf()
    }

    fn extensions(&mut self) -> Result<(), Stop> {
        let start = self.at;
        while self.peek()? == b';' {
            self.at += 1;
            self.run(is_tchar, 32)?;
            if self.peek()? == b'=' {
                self.at += 1;
                if self.peek()? == b'"' {
                    self.quoted()?;
                } else {
                    self.run(is_tchar, 32)?;
                }
            }
            if self.at - start > 32 {
                return Err(Stop::Outside);
            }
        }
        Ok(())
    }

    fn quoted(&mut self) -> Result<(), Stop> {
        self.take(b'"')?;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.at += 1;
                    let escaped = self.peek()?;
                    if !(escaped == b'\t' || (0x20..0x7f).contains(&escaped)) {
                        return Err(Stop::Outside);
                    }
                    self.at += 1;
                }
                b'\t' | 0x20..=0x7e => self.at += 1,
                _ => return Err(Stop::Outside),
            }
        }
    }

    fn trailer(&mut self) -> Result<(), Stop> {
        let start = self.at;
        self.run(is_tchar, 64)?;
        let name = self.bytes[start..self.at].to_ascii_lowercase();
        if [
            &b"content-length"[..],
            b"transfer-encoding",
            b"host",
            b"trailer",
        ]
        .contains(&&name[..])
        {
            return Err(Stop::Outside);
        }
        self.take(b':')?;
        while self.peek()? == b' ' {
            self.at += 1;
        }
        let value = self.at;
        while matches!(self.peek()?, 0x21..=0x7e | b' ') {
            self.at += 1;
            if self.at - value > 128 {
                return Err(Stop::Outside);
            }
        }
        if self.at > value && self.bytes[self.at - 1] == b' ' {
            return Err(Stop::Outside);
        }
        self.crlf()
    }
}

/// The scanner's answer for the whole input, fed in one piece or in the
/// pieces `cuts` gives (piece lengths, cycled; 0 means 1).
pub fn scan(bytes: &[u8], cuts: &[u8]) -> Result<Option<usize>, BadChunk> {
    let mut scanner = ChunkedScanner::default();
    let mut offset = 0;
    let mut cut = cuts.iter().cycle();
    while offset < bytes.len() {
        let len = if cuts.is_empty() {
            bytes.len()
        } else {
            usize::from(*cut.next().unwrap_or(&1)).max(1)
        };
        let piece = &bytes[offset..(offset + len).min(bytes.len())];
        if let Some(end) = scanner.feed(piece)? {
            assert!(
                end <= piece.len(),
                "the scanner ended past what it was given"
            );
            return Ok(Some(offset + end));
        }
        offset += piece.len();
    }
    Ok(None)
}

/// The properties both chunked targets check on a body and its cuts.
pub fn check_chunked(body: &[u8], cuts: &[u8]) {
    let whole = scan(body, &[]);
    let pieces = scan(body, cuts);
    assert_eq!(whole, pieces, "the answer depends on how the body was cut");
    if let Ok(Some(end)) = whole {
        assert!(end <= body.len());
        // Nothing after the end changes where it is.
        assert_eq!(scan(&body[..end], &[]), Ok(Some(end)), "the body alone");
    }
    match reference_end(body) {
        Reference::Complete(end) => {
            assert_eq!(whole, Ok(Some(end)), "a valid body framed differently")
        }
        Reference::Incomplete => assert_eq!(whole, Ok(None), "a valid, unfinished body"),
        Reference::Outside => {}
    }
}
