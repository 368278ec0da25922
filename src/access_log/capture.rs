//! What the fast path keeps of a request for its log line, and its
//! `x-request-id`.
//!
//! The fast path reuses its buffers while a request is on (the client
//! buffer takes the body and the next request, the head buffer the
//! response head), so the fields the line needs are copied out of the
//! upstream head right after it is written, into a [`Capture`] that lives
//! in the connection's pooled scratch: no allocation per request.

use std::net::IpAddr;
use std::time::Duration;

use super::Entry;
use crate::stats::Instant;

/// Bytes a capture holds: the method, target and fields, each bounded.
const CAPACITY: usize = 4096;
const MAX_TARGET: usize = 2048;
const MAX_FIELD: usize = 512;

/// The header that carries the request id upstream.
pub const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u16,
    len: u16,
}

/// One fast-path request's log fields, captured at its start.
#[derive(Debug, Default)]
pub struct Capture {
    buf: Vec<u8>,
    method: Span,
    target: Span,
    request_id: Span,
    referer: Span,
    user_agent: Span,
    /// The status of the response head relayed to the client, if any.
    pub status: Option<u16>,
    /// Response body bytes relayed to the client.
    pub body_bytes: u64,
    /// When the upstream's response head arrived.
    pub upstream_at: Option<Instant>,
    /// `route`, `sticky` or `split`.
    why: &'static str,
}

impl Capture {
    /// A capture with its room allocated once (none while the log is off).
    pub fn new() -> Capture {
        Capture {
            buf: Vec::with_capacity(if super::enabled() { CAPACITY } else { 0 }),
            ..Capture::default()
        }
    }

    fn keep(&mut self, bytes: &[u8], max: usize) -> Span {
        let bytes = &bytes[..bytes.len().min(max).min(CAPACITY - self.buf.len())];
        let start = self.buf.len() as u16;
        self.buf.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len() as u16,
        }
    }

    fn get(&self, span: Span) -> &[u8] {
        let start = usize::from(span.start);
        &self.buf[start..start + usize::from(span.len)]
    }

    /// Takes the fields of a request from the head that goes upstream
    /// (`METHOD target HTTP/1.1`, then `name: value` lines, CRLF-ended as
    /// the fast path writes them). Does nothing while the log is off.
    pub fn take_h1(&mut self, head: &[u8], why: &'static str) {
        if super::enabled() {
            self.take_fields(head);
            self.why = why;
        }
    }

    fn take_fields(&mut self, head: &[u8]) {
        *self = Capture {
            buf: std::mem::take(&mut self.buf),
            ..Capture::default()
        };
        self.buf.clear();
        let mut lines = head.split(|b| *b == b'\n');
        let request_line = lines.next().unwrap_or_default();
        let mut words = request_line.trim_ascii_end().splitn(3, |b| *b == b' ');
        let method = words.next().unwrap_or_default();
        let target = words.next().unwrap_or_default();
        self.method = self.keep(method, 32);
        self.target = self.keep(target, MAX_TARGET);
        for line in lines {
            let line = line.trim_ascii_end();
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(REQUEST_ID.as_bytes()) && self.request_id.len == 0 {
                self.request_id = self.keep(value, 128);
            } else if name.eq_ignore_ascii_case(b"referer") && self.referer.len == 0 {
                self.referer = self.keep(value, MAX_FIELD);
            } else if name.eq_ignore_ascii_case(b"user-agent") && self.user_agent.len == 0 {
                self.user_agent = self.keep(value, MAX_FIELD);
            }
        }
    }

    /// The upstream's response head arrived with `status`.
    pub fn answered(&mut self, status: u16) {
        if super::enabled() {
            self.status = Some(status);
            self.upstream_at = Some(Instant::now());
        }
    }

    /// The log entry of this request, answered `status` to `client` (pool,
    /// backend and duration are the exchange's to fill in).
    pub fn entry(&self, client: Option<IpAddr>, status: u16, started: Instant) -> Entry<'_> {
        Entry {
            client,
            method: self.method(),
            target: self.target(),
            protocol: "HTTP/1.1",
            status,
            bytes: self.body_bytes,
            duration: Duration::ZERO,
            upstream: self
                .upstream_at
                .map(|at| at.saturating_duration_since(started)),
            pool: None,
            backend: None,
            why: self.why,
            request_id: self.request_id(),
            referer: self.referer(),
            user_agent: self.user_agent(),
            failure: None,
        }
    }

    pub fn method(&self) -> &[u8] {
        self.get(self.method)
    }
    pub fn target(&self) -> &[u8] {
        self.get(self.target)
    }
    pub fn request_id(&self) -> &[u8] {
        self.get(self.request_id)
    }
    pub fn referer(&self) -> &[u8] {
        self.get(self.referer)
    }
    pub fn user_agent(&self) -> &[u8] {
        self.get(self.user_agent)
    }
}

/// The entry of a request refused before it was routed (a head over
/// `max_request_head`, one not complete within `request_head_timeout`, or
/// one against the framing rules), answered `status`: the method, target
/// and version its first line gives, as far as they go. No pool, no
/// upstream; `why` is `refused`. Nothing is allocated.
pub fn refused_entry(client: Option<IpAddr>, head: &[u8], status: u16) -> Entry<'_> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.trim_ascii_end().splitn(3, |b| *b == b' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let protocol = match words.next() {
        Some(b"HTTP/1.1") => "HTTP/1.1",
        Some(b"HTTP/1.0") => "HTTP/1.0",
        _ => "-",
    };
    Entry {
        client,
        method: &method[..method.len().min(32)],
        target: &target[..target.len().min(MAX_TARGET)],
        protocol,
        status,
        bytes: 0,
        duration: Duration::ZERO,
        upstream: None,
        pool: None,
        backend: None,
        why: "refused",
        request_id: b"",
        referer: b"",
        user_agent: b"",
        failure: None,
    }
}

/// The body length of one of switchyard's own answers (head and body).
pub fn answer_body_len(answer: &[u8]) -> u64 {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |end| (answer.len() - end - 4) as u64)
}

/// A new request id: 128 random bits as 32 hex digits.
pub fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let bits = [crate::routing::fast_random(), crate::routing::fast_random()];
    for (i, digit) in id.iter_mut().enumerate() {
        let word = bits[i / 16];
        *digit = HEX[((word >> ((i % 16) * 4)) & 15) as usize];
    }
    id
}

/// The fast path's upstream head gets an `x-request-id` line unless the
/// client sent one (kept as it is, with the other fields). Only while the
/// access log is on. Called with the head's header lines, before its end.
pub fn add_request_id_h1(headers: &[httparse::Header], out: &mut Vec<u8>) {
    if !super::enabled()
        || headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(REQUEST_ID))
    {
        return;
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(&new_request_id());
    out.extend_from_slice(b"\r\n");
}

/// For pingora's path: a new id when the access log is on and the request
/// carries none (the caller adds it upstream and keeps it for the line).
pub fn missing_request_id(headers: &http::HeaderMap) -> Option<[u8; 32]> {
    (super::enabled() && !headers.contains_key(REQUEST_ID)).then(new_request_id)
}

#[cfg(test)]
mod tests {
    use super::Capture;

    #[test]
    fn the_fields_come_from_the_upstream_head() {
        let mut c = Capture {
            buf: Vec::with_capacity(super::CAPACITY),
            ..Capture::default()
        };
        c.take_fields(
            b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nUser-Agent:  t/1 \r\nX-Request-Id: abc\r\n\
              referer: http://r/\r\n\r\nbody",
        );
        assert_eq!(c.method(), b"POST");
        assert_eq!(c.target(), b"/a?b=1");
        assert_eq!(c.user_agent(), b"t/1");
        assert_eq!(c.request_id(), b"abc");
        assert_eq!(c.referer(), b"http://r/");
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (super::new_request_id(), super::new_request_id());
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }
}
