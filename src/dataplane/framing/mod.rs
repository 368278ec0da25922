//! The one HTTP/1.1 framing rule set (RFC 9112) both request paths apply:
//! what a request head must look like before any byte of it is forwarded,
//! how its body is delimited, and a strict chunked scanner for bodies in
//! both directions.
//!
//! Pure and synchronous: [`request_framing`] decides on a parsed head,
//! [`chunked::ChunkedScanner`] follows a chunked body byte by byte. The fast
//! path calls them while it parses ([`super::fastpath`]); on pingora's path
//! [`stream::StrictStream`] runs the same code over the client's bytes
//! before pingora's own (more lenient) parser sees them. Where a rule and
//! pingora disagree, the rule wins, so both paths answer the same input
//! with the same status.
//!
//! Statuses: a head or body the rules refuse is a 400, except a
//! well-formed `Transfer-Encoding` naming a coding other than `chunked`
//! (`gzip, chunked`, `xchunked`), which is a 501 (RFC 9112 §6.1: a server
//! that does not understand a transfer coding answers 501; nginx does the
//! same). Either way the connection closes after the answer.

pub mod chunked;
pub mod response;
pub mod stream;

pub use chunked::{BadChunk, ChunkedScanner};

/// Header lines a head may have when the rules parse it (pingora's limit).
pub const MAX_HEADERS: usize = 256;

/// Why a request is refused; the status it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Malformed or ambiguous framing: 400.
    #[error("400 Bad Request: {0}")]
    BadRequest(&'static str),
    /// A transfer coding switchyard does not implement: 501.
    #[error("501 Not Implemented: {0}")]
    NotImplemented(&'static str),
    /// The head did not arrive whole within `request_head_timeout`: 408.
    #[error("408 Request Timeout: the request head took too long")]
    TimedOut,
    /// A head longer than `max_request_head`: 431.
    #[error("431 Request Header Fields Too Large")]
    TooLarge,
    /// A request line longer than `max_request_head`: 400.
    #[error("400 Bad Request: request line too long")]
    LineTooLong,
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::NotImplemented(_) => 501,
            Reject::TimedOut => 408,
            Reject::TooLarge => 431,
            Reject::LineTooLong => 400,
        }
    }

    /// The whole answer as the fast path writes it (it closes the
    /// connection). pingora's path sends the same status through pingora.
    pub fn response(&self) -> &'static [u8] {
        match self {
            Reject::BadRequest(_) => BAD_REQUEST,
            Reject::NotImplemented(_) => NOT_IMPLEMENTED,
            Reject::TimedOut => crate::dataplane::head_limit::TIMED_OUT,
            Reject::TooLarge => crate::dataplane::head_limit::TOO_LARGE,
            Reject::LineTooLong => crate::dataplane::head_limit::LINE_TOO_LONG,
        }
    }
}

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\
cache-control: private, no-store\r\nconnection: close\r\n\r\n";
const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\n\
cache-control: private, no-store\r\nconnection: close\r\n\r\n";

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` (0 when neither field is present).
    Length(u64),
    Chunked,
}

/// Applies the rules to a parsed request head: `Ok` with its body framing,
/// or why it is refused. `version` is httparse's minor version.
pub fn request_framing(
    method: &str,
    target: &str,
    version: u8,
    headers: &[httparse::Header],
) -> Result<Body, Reject> {
    check_target(method, target.as_bytes())?;
    let mut hosts = 0usize;
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut coding = Ok(());
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Reject::BadRequest("more than one Content-Length"));
            }
            length = Some(
                parse_length(header.value)
                    .ok_or(Reject::BadRequest("Content-Length is not one number"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings += 1;
            coding = transfer_coding(header.value);
        }
    }
    // RFC 9112 §3.2: exactly one Host on HTTP/1.1; at most one on 1.0.
    if hosts > 1 || (hosts == 0 && version == 1) {
        return Err(Reject::BadRequest("not exactly one Host"));
    }
    if codings == 0 {
        return Ok(Body::Length(length.unwrap_or(0)));
    }
    if codings > 1 {
        return Err(Reject::BadRequest(
            "Transfer-Encoding on more than one line",
        ));
    }
    // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 is faulty framing; with
    // Content-Length it is the classic desync, refused rather than
    // resolved (§6.3 allows either; refusing leaves nothing to disagree on).
    if version == 0 {
        return Err(Reject::BadRequest("Transfer-Encoding on HTTP/1.0"));
    }
    if length.is_some() {
        return Err(Reject::BadRequest("Transfer-Encoding with Content-Length"));
    }
    // What the one line says decides last: a malformed list is a 400, an
    // unknown coding a 501.
    coding?;
    Ok(Body::Chunked)
}

/// One `Transfer-Encoding` value: `Ok` if it is exactly `chunked`. A list
/// with an empty element, a non-token, `chunked` twice or not last is
/// malformed (400); a well-formed list with another coding is a 501.
fn transfer_coding(value: &[u8]) -> Result<(), Reject> {
    let mut elements = value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .peekable();
    let mut unknown = false;
    while let Some(coding) = elements.next() {
        if coding.is_empty() {
            return Err(Reject::BadRequest("empty Transfer-Encoding element"));
        }
        // Parameters (`;q=`) are not allowed on chunked and we implement
        // no other coding: only the bare token matters.
        if !coding.iter().all(|b| is_tchar(*b)) {
            return Err(Reject::BadRequest(
                "Transfer-Encoding element is not a token",
            ));
        }
        if coding.eq_ignore_ascii_case(b"chunked") {
            if elements.peek().is_some() {
                return Err(Reject::BadRequest(
                    "chunked is not the last transfer coding",
                ));
            }
        } else {
            unknown = true;
        }
    }
    if unknown {
        return Err(Reject::NotImplemented(
            "a transfer coding other than chunked",
        ));
    }
    Ok(())
}

/// RFC 9112 §3.2: origin-form (`/path`), absolute-form (`http://…`),
/// authority-form only with CONNECT, `*` only with OPTIONS; and only the
/// visible ASCII a URI is made of — never autocorrected (§3: a server
/// must not "fix" an invalid request-line).
pub fn check_target(method: &str, target: &[u8]) -> Result<(), Reject> {
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Reject::BadRequest("request-target has a byte a URI can't"));
    }
    let connect = method == "CONNECT";
    let form_ok = if connect {
        // authority-form: host:port, nothing else.
        !target.contains(&b'/') && target.contains(&b':')
    } else if target == b"*" {
        method == "OPTIONS"
    } else {
        target.starts_with(b"/") || absolute_form(target)
    };
    if form_ok {
        Ok(())
    } else {
        Err(Reject::BadRequest(
            "request-target in a form the method can't use",
        ))
    }
}

/// `scheme://…` with an ASCII-letter scheme: absolute-form.
fn absolute_form(target: &[u8]) -> bool {
    let Some(colon) = target.iter().position(|b| *b == b':') else {
        return false;
    };
    let scheme = &target[..colon];
    !scheme.is_empty()
        && scheme[0].is_ascii_alphabetic()
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && target[colon..].starts_with(b"://")
}

/// A `Content-Length` value: digits only (no list, no sign), at most 18 of
/// them (RFC 9110 §8.6).
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 {
        return None;
    }
    value.iter().try_fold(0u64, |total, byte| {
        byte.is_ascii_digit()
            .then(|| total * 10 + u64::from(byte - b'0'))
    })
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Where a request head parsed from raw bytes stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStatus {
    /// Not complete yet.
    Partial,
    /// A whole head of this many bytes, and how its body is delimited;
    /// `tunnel` when it asks to leave HTTP (`Upgrade`, `CONNECT`).
    Complete {
        head_len: usize,
        body: Body,
        tunnel: bool,
    },
    /// More header lines than [`MAX_HEADERS`]: the rules can't judge it
    /// (pingora refuses it itself).
    TooManyHeaders,
}

/// Parses a request head from raw bytes and applies the rules: the entry
/// point for a caller holding bytes (pingora's path, fuzzing). Leading
/// empty lines are skipped as httparse does (RFC 9112 §2.2).
pub fn parse_request_head(bytes: &[u8]) -> Result<HeadStatus, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(HeadStatus::Partial),
        Err(httparse::Error::TooManyHeaders) => return Ok(HeadStatus::TooManyHeaders),
        Err(_) => return Err(Reject::BadRequest("malformed request head")),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Err(Reject::BadRequest("malformed request line"));
    };
    let body = request_framing(method, target, version, request.headers)?;
    let tunnel = method == "CONNECT"
        || request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    Ok(HeadStatus::Complete {
        head_len,
        body,
        tunnel,
    })
}

#[cfg(test)]
mod tests;
