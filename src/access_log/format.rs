//! One access log line, written into a fixed buffer: JSON (one object per
//! line) or the Apache/NGINX combined format plus pool, backend, duration.
//!
//! Everything writes into a [`Line`] of fixed capacity, so formatting never
//! allocates; fields the client controls are cut to a bound first, so that
//! even fully escaped they fit, and a line that would not fit anyway is
//! reported instead of written half.

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AccessLogFormat;
use crate::stats::FailureKind;

/// What one finished request leaves in the log.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub client: Option<IpAddr>,
    pub method: &'a [u8],
    /// As the client sent it (origin form on HTTP/1.1, path on h2).
    pub target: &'a [u8],
    /// `HTTP/1.1`, `HTTP/2.0`, …
    pub protocol: &'a str,
    /// As sent to the client; 499 when the client went away first.
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: u64,
    pub duration: Duration,
    /// From the request's start until the upstream's response head.
    pub upstream: Option<Duration>,
    pub pool: Option<&'a str>,
    pub backend: Option<&'a str>,
    /// `route`, `sticky` or `split`; `refused` for a request refused
    /// before routing (head limits, framing rules); empty when no pool was
    /// chosen.
    pub why: &'static str,
    pub request_id: &'a [u8],
    pub referer: &'a [u8],
    pub user_agent: &'a [u8],
    pub failure: Option<FailureKind>,
}

impl Entry<'_> {
    /// Counted in the pool's error rate: a 5xx, or no upstream answer.
    pub fn is_error(&self) -> bool {
        self.status >= 500 || self.failure.is_some()
    }
}

/// Input bytes kept of the client's fields (escaping may grow them 6×).
const MAX_TARGET: usize = 2048;
const MAX_FIELD: usize = 512;
const MAX_SHORT: usize = 128;
/// Room for the longest line the bounds above allow, escaped.
pub const LINE_CAPACITY: usize = 6 * (MAX_TARGET + 2 * MAX_FIELD + 4 * MAX_SHORT) + 1024;

/// A line being written: fixed capacity, never grows.
pub struct Line {
    bytes: Box<[u8]>,
    len: usize,
    overflow: bool,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            bytes: vec![0; LINE_CAPACITY].into_boxed_slice(),
            len: 0,
            overflow: false,
        }
    }
}

impl Line {
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }

    /// The whole line, or `None` if it did not fit.
    pub fn get(&self) -> Option<&[u8]> {
        (!self.overflow).then_some(&self.bytes[..self.len])
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.overflow = true,
        }
    }

    fn byte(&mut self, b: u8) {
        self.push(&[b]);
    }

    fn number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    /// Milliseconds with three decimals.
    fn millis(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.number(micros / 1000);
        let frac = micros % 1000;
        self.push(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }

    fn ip(&mut self, ip: IpAddr) {
        let mut text = [0u8; 40];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        if write!(cursor, "{ip}").is_ok() {
            let len = cursor.position() as usize;
            self.push(&text[..len]);
        }
    }

    /// A JSON string: quotes, backslash and control characters escaped,
    /// valid UTF-8 kept, any other byte written as the code point of the
    /// same value (`\u00ff`), so the line is always valid JSON and UTF-8.
    fn json_string(&mut self, bytes: &[u8], max: usize) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.byte(b'"');
        for chunk in bytes[..bytes.len().min(max)].utf8_chunks() {
            let valid = chunk.valid().as_bytes();
            let mut run = 0;
            for (i, &b) in valid.iter().enumerate() {
                let short = match b {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'\n' => b'n',
                    b'\r' => b'r',
                    b'\t' => b't',
                    0..=0x1f | 0x7f => 0,
                    _ => continue,
                };
                self.push(&valid[run..i]);
                run = i + 1;
                if short != 0 {
                    self.push(&[b'\\', short]);
                } else {
                    self.push(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[(b >> 4) as usize],
                        HEX[(b & 15) as usize],
                    ]);
                }
            }
            self.push(&valid[run..]);
            for &b in chunk.invalid() {
                self.push(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            }
        }
        self.byte(b'"');
    }

    /// A field of the combined format, the way NGINX escapes its log:
    /// `"`, `\`, control and non-ASCII bytes as `\xHH`; empty is `-`.
    fn escaped(&mut self, bytes: &[u8], max: usize) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        if bytes.is_empty() {
            self.byte(b'-');
            return;
        }
        let bytes = &bytes[..bytes.len().min(max)];
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                self.push(&bytes[run..i]);
                self.push(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
                run = i + 1;
            }
        }
        self.push(&bytes[run..]);
    }
}

/// Writes `entry` as one line (with its newline) finished at `at`.
pub fn write(line: &mut Line, format: AccessLogFormat, entry: &Entry, at: SystemTime) {
    line.clear();
    match format {
        AccessLogFormat::Json => json(line, entry, at),
        AccessLogFormat::Combined => combined(line, entry, at),
    }
    line.byte(b'\n');
}

fn json(line: &mut Line, e: &Entry, at: SystemTime) {
    line.push(b"{\"time\":\"");
    rfc3339(line, at);
    line.push(b"\",\"client\":");
    match e.client {
        Some(ip) => {
            line.byte(b'"');
            line.ip(ip);
            line.byte(b'"');
        }
        None => line.push(b"null"),
    }
    line.push(b",\"method\":");
    line.json_string(e.method, MAX_SHORT);
    line.push(b",\"target\":");
    line.json_string(e.target, MAX_TARGET);
    line.push(b",\"protocol\":");
    line.json_string(e.protocol.as_bytes(), MAX_SHORT);
    line.push(b",\"status\":");
    line.number(u64::from(e.status));
    line.push(b",\"bytes\":");
    line.number(e.bytes);
    line.push(b",\"duration_ms\":");
    line.millis(e.duration);
    line.push(b",\"upstream_ms\":");
    match e.upstream {
        Some(d) => line.millis(d),
        None => line.push(b"null"),
    }
    for (key, value) in [(&b",\"pool\":"[..], e.pool), (b",\"backend\":", e.backend)] {
        line.push(key);
        match value {
            Some(v) => line.json_string(v.as_bytes(), MAX_SHORT),
            None => line.push(b"null"),
        }
    }
    line.push(b",\"why\":");
    if e.why.is_empty() {
        line.push(b"null");
    } else {
        line.json_string(e.why.as_bytes(), MAX_SHORT);
    }
    line.push(b",\"request_id\":");
    line.json_string(e.request_id, MAX_SHORT);
    if let Some(kind) = e.failure {
        line.push(b",\"upstream_failure\":");
        line.json_string(kind.label().as_bytes(), MAX_SHORT);
    }
    line.byte(b'}');
}

/// `client - - [time] "METHOD target PROTOCOL" status bytes "referer" "agent"`
/// then `key=value` pairs for what switchyard adds.
fn combined(line: &mut Line, e: &Entry, at: SystemTime) {
    match e.client {
        Some(ip) => line.ip(ip),
        None => line.byte(b'-'),
    }
    line.push(b" - - [");
    common_log_time(line, at);
    line.push(b"] \"");
    line.escaped(e.method, MAX_SHORT);
    line.byte(b' ');
    line.escaped(e.target, MAX_TARGET);
    line.byte(b' ');
    line.escaped(e.protocol.as_bytes(), MAX_SHORT);
    line.push(b"\" ");
    line.number(u64::from(e.status));
    line.byte(b' ');
    line.number(e.bytes);
    line.push(b" \"");
    line.escaped(e.referer, MAX_FIELD);
    line.push(b"\" \"");
    line.escaped(e.user_agent, MAX_FIELD);
    line.push(b"\" pool=");
    line.escaped(e.pool.unwrap_or("").as_bytes(), MAX_SHORT);
    line.push(b" backend=");
    line.escaped(e.backend.unwrap_or("").as_bytes(), MAX_SHORT);
    line.push(b" duration_ms=");
    line.millis(e.duration);
    line.push(b" upstream_ms=");
    match e.upstream {
        Some(d) => line.millis(d),
        None => line.byte(b'-'),
    }
    line.push(b" why=");
    line.escaped(e.why.as_bytes(), MAX_SHORT);
    line.push(b" request_id=");
    line.escaped(e.request_id, MAX_SHORT);
    if let Some(kind) = e.failure {
        line.push(b" upstream_failure=");
        line.push(kind.label().as_bytes());
    }
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

fn parts(at: SystemTime) -> Parts {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (year, month, day) = civil(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400) as u32;
    Parts {
        year,
        month,
        day,
        hour: of_day / 3600,
        minute: of_day / 60 % 60,
        second: of_day % 60,
        millis: since.subsec_millis(),
    }
}

fn two(line: &mut Line, n: u32) {
    line.push(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
}

/// `2026-12-01T23:59:59.123Z`
fn rfc3339(line: &mut Line, at: SystemTime) {
    let p = parts(at);
    line.number(p.year.max(0) as u64);
    line.byte(b'-');
    two(line, p.month);
    line.byte(b'-');
    two(line, p.day);
    line.byte(b'T');
    two(line, p.hour);
    line.byte(b':');
    two(line, p.minute);
    line.byte(b':');
    two(line, p.second);
    line.byte(b'.');
    line.push(&[
        b'0' + (p.millis / 100) as u8,
        b'0' + (p.millis / 10 % 10) as u8,
        b'0' + (p.millis % 10) as u8,
    ]);
    line.byte(b'Z');
}

/// `01/Dec/2026:23:59:59 +0000`
fn common_log_time(line: &mut Line, at: SystemTime) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let p = parts(at);
    two(line, p.day);
    line.byte(b'/');
    line.push(MONTHS[(p.month as usize + 11) % 12]);
    line.byte(b'/');
    line.number(p.year.max(0) as u64);
    line.byte(b':');
    two(line, p.hour);
    line.byte(b':');
    two(line, p.minute);
    line.byte(b':');
    two(line, p.second);
    line.push(b" +0000");
}

#[cfg(test)]
mod tests;
