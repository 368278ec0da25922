//! The request-head limits every path enforces (`[server]
//! max_request_head`, `request_head_timeout`), and the answers a client
//! gets past them. Pure: the fast path and the gate in front of pingora
//! ([`super::head_gate`]) both decide with these, so both paths refuse the
//! same heads with the same bytes.

use std::time::Duration;

use crate::config::ServerConfig;
use crate::stats::now_ms;

/// A head longer than the limit whose request line ends within it.
pub const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\n\
request header fields too large\n";
/// A request line that alone is longer than the limit.
pub const LINE_TOO_LONG: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\nContent-Length: 22\r\nConnection: close\r\n\r\n\
request line too long\n";
/// A head not complete within `request_head_timeout` of its first byte.
pub const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
Content-Type: text/plain\r\nContent-Length: 30\r\nConnection: close\r\n\r\n\
request head not sent in time\n";

/// The limits in force for one request head (copied out of the routing
/// table's config: a reload applies from the next head on).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes from the request line's first byte through the blank line.
    pub max: usize,
    /// From the head's first byte to its blank line.
    pub timeout: Duration,
    /// How long an idle keep-alive connection waits for a next head.
    pub idle: Duration,
}

impl HeadLimits {
    pub fn of(server: &ServerConfig) -> HeadLimits {
        HeadLimits {
            max: server.max_request_head,
            timeout: server.request_head_timeout,
            idle: server.idle_timeout,
        }
    }
}

/// When the head that is arriving must be complete, on the stats clock
/// (milliseconds; read only for heads that don't arrive in one read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDeadline {
    at_ms: u64,
}

impl HeadDeadline {
    /// A head whose first byte is here now.
    pub fn starting_now(limits: &HeadLimits) -> HeadDeadline {
        let timeout_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
        HeadDeadline {
            at_ms: now_ms().saturating_add(timeout_ms),
        }
    }

    /// Time left (zero once past).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.at_ms.saturating_sub(now_ms()))
    }
}

/// The status code of one of the answers above (`HTTP/1.1 NNN ...`).
pub fn answer_status(answer: &[u8]) -> u16 {
    answer
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .unwrap_or(400)
}

/// The answer for a head of which `bytes` (at least `max` of them, or a
/// complete head longer than `max`) have arrived: 400 when no line ended
/// within the first `max` bytes (the request line alone is too long),
/// else 431.
pub fn refusal(bytes: &[u8], max: usize) -> &'static [u8] {
    let start = leading_empty_lines(bytes);
    let window = &bytes[start.min(bytes.len())..bytes.len().min(max)];
    if window.contains(&b'\n') {
        TOO_LARGE
    } else {
        LINE_TOO_LONG
    }
}

/// CR and LF bytes before the request line (RFC 9112 §2.2 lets a server
/// ignore empty lines there, and the parsers do).
fn leading_empty_lines(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// Finds where a head ends as it arrives, resuming where the last look
/// stopped (a head dripped byte by byte is scanned once, not once per
/// byte). A head ends at its first empty line, LF or CRLF terminated, as
/// the parsers behind it read it.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Bytes already looked at.
    scanned: usize,
}

impl HeadScan {
    /// The head's length once `bytes` hold all of it.
    pub fn end(&mut self, bytes: &[u8]) -> Option<usize> {
        let start = leading_empty_lines(bytes);
        if start == bytes.len() {
            return None;
        }
        // Back up two bytes: an LF seen last time may begin "\n\r\n".
        let from = self.scanned.saturating_sub(2).max(start);
        self.scanned = bytes.len();
        let mut at = from;
        while let Some(found) = bytes[at..].iter().position(|b| *b == b'\n') {
            let lf = at + found;
            match bytes.get(lf + 1..) {
                Some([b'\n', ..]) => return Some(lf + 2),
                Some([b'\r', b'\n', ..]) => return Some(lf + 3),
                _ => at = lf + 1,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_first_empty_line_however_it_arrives() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        let mut scan = HeadScan::default();
        for n in 0..27 {
            assert_eq!(scan.end(&head[..n]), None, "{n} bytes");
        }
        assert_eq!(scan.end(&head[..27]), Some(27));
        assert_eq!(HeadScan::default().end(head), Some(27));
        assert_eq!(
            HeadScan::default().end(b"GET / HTTP/1.1\nHost: a\n\n"),
            Some(24)
        );
        assert_eq!(HeadScan::default().end(b"\r\n\r\nGET / HTTP/1.1\r\n"), None);
        assert_eq!(HeadScan::default().end(b"\r\n\r\n"), None);
    }

    #[test]
    fn the_request_line_alone_over_the_limit_is_a_400() {
        let mut long_line = b"GET /".to_vec();
        long_line.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(refusal(&long_line, 64), LINE_TOO_LONG);
        long_line.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(refusal(&long_line, 64), LINE_TOO_LONG);
        let mut fields = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        fields.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(refusal(&fields, 64), TOO_LARGE);
    }

    #[test]
    fn answers_say_their_length_and_close() {
        for answer in [TOO_LARGE, LINE_TOO_LONG, TIMED_OUT] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("\r\nConnection: close"), "{head}");
            let length = format!("\r\nContent-Length: {}\r\n", body.len());
            assert!(head.contains(&length), "{text:?}");
        }
    }
}
