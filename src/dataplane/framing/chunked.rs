//! Finds where a chunked message body ends, without decoding it, and
//! refuses any framing RFC 9112 §7.1 does not allow.
//!
//! Both paths forward a chunked body byte for byte (the next hop decodes
//! it); this only has to know where the message ends, so that the
//! connection can carry the next message, and it must refuse a framing it
//! can't follow rather than guess: every line ends in CR LF (a bare CR or
//! LF anywhere in the framing is refused), a chunk size is one or more hex
//! digits, a chunk extension and a trailer line hold no control byte
//! other than HTAB. Chunk extensions and trailers pass through unread.

/// Where the scanner is inside the chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex chunk size (`digits` read so far).
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only `;` or the line end may follow.
    SizeSpace,
    /// After `;`: the extension, up to the line end.
    Extension,
    /// Saw CR at the end of the size line.
    SizeLf,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// Chunk data done: expecting CR LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR at the end of a trailer line.
    TrailerLf,
    /// Saw CR of the final empty line.
    FinalLf,
    Done,
}

/// The framing is broken: the message's end can't be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked framing")]
pub struct BadChunk;

#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            size: 0,
        }
    }
}

/// 16 hex digits is already more than any body we could carry.
const MAX_SIZE_DIGITS: u8 = 15;

/// A byte allowed inside a chunk extension or a trailer line: visible
/// ASCII, SP, HTAB, obs-text; no other control byte (CR and LF end lines).
fn field_byte(byte: u8) -> bool {
    byte == b'\t' || (byte >= 0x20 && byte != 0x7f)
}

impl ChunkedScanner {
    /// Reads the next bytes of the body. `Ok(Some(n))`: the message ends
    /// after `bytes[..n]` (anything after belongs to no message of this
    /// body). `Ok(None)`: all of `bytes` is body and more is to come.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data(left) = self.state {
                // Skip the chunk's data in one step.
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data(left - take)
                };
                continue;
            }
            let byte = bytes[i];
            self.state = match self.state {
                State::Data(_) | State::Done => return Ok(Some(i)),
                State::Size { digits } => match hex_value(byte) {
                    Some(value) if digits < MAX_SIZE_DIGITS => {
                        self.size = self.size * 16 + u64::from(value);
                        State::Size { digits: digits + 1 }
                    }
                    // Too long, or no digit at all (an empty size line is
                    // not a last chunk).
                    Some(_) => return Err(BadChunk),
                    None if digits == 0 => return Err(BadChunk),
                    None => match byte {
                        b';' => State::Extension,
                        b' ' | b'\t' => State::SizeSpace,
                        b'\r' => State::SizeLf,
                        _ => return Err(BadChunk),
                    },
                },
                State::SizeSpace => match byte {
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(BadChunk),
                },
                State::Extension => match byte {
                    b'\r' => State::SizeLf,
                    _ if field_byte(byte) => State::Extension,
                    _ => return Err(BadChunk),
                },
                State::SizeLf => match byte {
                    b'\n' => self.size_line_done(),
                    _ => return Err(BadChunk),
                },
                State::DataCr => match byte {
                    b'\r' => State::DataLf,
                    _ => return Err(BadChunk),
                },
                State::DataLf => match byte {
                    b'\n' => State::Size { digits: 0 },
                    _ => return Err(BadChunk),
                },
                State::TrailerStart => match byte {
                    b'\r' => State::FinalLf,
                    // A trailer line can't start with whitespace (that
                    // would be obs-fold).
                    b' ' | b'\t' => return Err(BadChunk),
                    _ if field_byte(byte) => State::TrailerLine,
                    _ => return Err(BadChunk),
                },
                State::TrailerLine => match byte {
                    b'\r' => State::TrailerLf,
                    _ if field_byte(byte) => State::TrailerLine,
                    _ => return Err(BadChunk),
                },
                State::TrailerLf => match byte {
                    b'\n' => State::TrailerStart,
                    _ => return Err(BadChunk),
                },
                State::FinalLf => match byte {
                    b'\n' => State::Done,
                    _ => return Err(BadChunk),
                },
            };
            i += 1;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn size_line_done(&mut self) -> State {
        let size = std::mem::take(&mut self.size);
        if size == 0 {
            State::TrailerStart
        } else {
            State::Data(size)
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns where the message ended.
    fn end_of(body: &[u8], step: usize) -> Result<Option<usize>, BadChunk> {
        let mut scanner = ChunkedScanner::default();
        let mut offset = 0;
        for piece in body.chunks(step) {
            if let Some(end) = scanner.feed(piece)? {
                return Ok(Some(offset + end));
            }
            offset += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_read_sizes() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                     3 ;q=\"a b\"\r\nabc\r\n0\r\n\r\nGET /next";
        let end = body.len() - b"GET /next".len();
        for step in 1..body.len() {
            assert_eq!(end_of(body, step), Ok(Some(end)), "step {step}");
        }
    }

    #[test]
    fn trailers_are_followed() {
        let body = b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n";
        assert_eq!(end_of(body, 4), Ok(Some(body.len())));
    }

    #[test]
    fn an_unfinished_body_wants_more() {
        assert_eq!(end_of(b"5\r\nhel", 2), Ok(None));
        assert_eq!(end_of(b"0\r\nX-Trailer: y\r\n", 3), Ok(None));
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX",
            b"5\rX",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;a\x00\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX-T: a\rb\r\n\r\n",
            b"0\r\nX-T: a\n\r\n",
            b"0\r\n\n",
            b"0\r\n folded\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffff0\r\n",
        ] {
            assert_eq!(end_of(bad, 1), Err(BadChunk), "{:?}", bad.escape_ascii());
        }
    }
}
