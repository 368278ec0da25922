//! Follows one upstream HTTP/1.1 response exchange byte by byte and refuses
//! a response that can't be framed (RFC 9112 §6.3, §7.1), with the rules
//! the fast path applies to the responses it relays
//! (`fastpath::head::parse_response` and [`super::ChunkedScanner`]): a
//! malformed head, conflicting or non-numeric `Content-Length`, a chunked
//! body with an empty or non-hex size, a bare CR or LF anywhere in its
//! framing, a control byte in an extension or a trailer.
//!
//! It does not decode anything: it only has to know where the response
//! ends, so that a broken one is refused before its bytes go on, and so
//! that the connection is kept for another request only when the response
//! ended exactly where its framing says. Pure and synchronous; pingora's
//! path runs it over what its upstream sockets read
//! ([`crate::dataplane::strict_upstream`]).

use super::chunked::ChunkedScanner;
use super::parse_length;

/// Header lines a response head may have (the fast path's limit).
pub const MAX_RESPONSE_HEADERS: usize = 256;

/// A response head longer than this is refused. pingora itself reads heads
/// up to 1 MiB; the fast path stops at its 16 KiB buffer. 64 KiB leaves
/// room for large cookie and policy headers without buffering without end.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The response can't be framed: why, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream response can't be framed: {0}")]
pub struct BadResponse(pub &'static str);

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: a response to HEAD, 204, 304 (a 1xx has none either, and a
    /// final response follows it).
    Empty,
    Length(u64),
    Chunked,
    /// The body ends when the origin closes the connection.
    UntilClose,
    /// 101: the connection is no longer HTTP.
    Tunnel,
}

/// What a response head says about its body and its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFraming {
    pub status: u16,
    pub body: ResponseBody,
    /// The connection can't carry another request after this response.
    pub close: bool,
}

/// A response head's framing fields (`Content-Length`, `Transfer-Encoding`,
/// `Connection`), gathered line by line: the one rule set both paths apply,
/// the fast path while it rewrites the head it relays
/// (`fastpath::head::parse_response`), pingora's path in
/// [`response_framing`].
#[derive(Debug, Clone, Copy)]
pub struct FramingFields {
    length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    close: bool,
}

impl FramingFields {
    /// `version` is httparse's minor version: HTTP/1.0 connections close
    /// unless told otherwise, and are not reused.
    pub fn new(version: u8) -> FramingFields {
        FramingFields {
            length: None,
            chunked: false,
            other_coding: false,
            close: version == 0,
        }
    }

    /// Repeated lines must all say the same one number.
    pub fn content_length(&mut self, value: &[u8]) -> Result<(), BadResponse> {
        match parse_length(value) {
            Some(len) if self.length.is_none_or(|prior| prior == len) => {
                self.length = Some(len);
                Ok(())
            }
            _ => Err(BadResponse("Content-Length is not one number")),
        }
    }

    pub fn transfer_encoding(&mut self, value: &[u8]) {
        // Only the last coding decides whether the body is chunked.
        let mut any = false;
        for token in tokens(value) {
            self.chunked = token.eq_ignore_ascii_case(b"chunked");
            self.other_coding |= !self.chunked;
            any = true;
        }
        // A line with no coding at all: the framing is unknowable, so the
        // body runs until close.
        if !any {
            self.chunked = false;
            self.other_coding = true;
        }
    }

    pub fn connection(&mut self, value: &[u8]) {
        self.close |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"close"));
    }

    /// A Transfer-Encoding was given: it frames the body, and a
    /// `Content-Length` beside it is not passed on (RFC 9112 §6.3).
    pub fn has_coding(&self) -> bool {
        self.chunked || self.other_coding
    }

    /// How the body of a response with `status` is delimited.
    pub fn body(&self, status: u16, head_method: bool) -> ResponseBody {
        if status == 101 {
            ResponseBody::Tunnel
        } else if (100..200).contains(&status) || head_method || status == 204 || status == 304 {
            ResponseBody::Empty
        } else if self.chunked {
            ResponseBody::Chunked
        } else if self.other_coding {
            ResponseBody::UntilClose
        } else if let Some(len) = self.length {
            ResponseBody::Length(len)
        } else {
            ResponseBody::UntilClose
        }
    }

    /// The connection can't carry another request after a response with
    /// this `body`.
    pub fn close_after(&self, body: ResponseBody) -> bool {
        self.close || matches!(body, ResponseBody::UntilClose | ResponseBody::Tunnel)
    }
}

/// Applies the rules to a parsed response head. `version` is httparse's
/// minor version; `head_method`: the request was a HEAD.
pub fn response_framing(
    version: u8,
    status: u16,
    head_method: bool,
    headers: &[httparse::Header],
) -> Result<HeadFraming, BadResponse> {
    // httparse takes any three digits; below 100 is no status at all.
    if status < 100 {
        return Err(BadResponse("status below 100"));
    }
    let mut fields = FramingFields::new(version);
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            fields.content_length(header.value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            fields.transfer_encoding(header.value);
        } else if name.eq_ignore_ascii_case("connection") {
            fields.connection(header.value);
        }
    }
    let body = fields.body(status, head_method);
    Ok(HeadFraming {
        status,
        body,
        close: fields.close_after(body),
    })
}

/// Parses a response head from the start of `bytes`: `Ok(None)` while it
/// is incomplete, else its length and framing.
pub fn parse_response_head(
    bytes: &[u8],
    head_method: bool,
) -> Result<Option<(usize, HeadFraming)>, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse("malformed response head")),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse("malformed status line"));
    };
    let framing = response_framing(version, status, head_method, response.headers)?;
    Ok(Some((head_len, framing)))
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones
/// skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[derive(Debug, Clone)]
enum State {
    /// Reading a response head (the first, or the one after a 1xx).
    Head,
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
    Tunnel,
    /// The final response is whole.
    Done,
    Broken(BadResponse),
}

/// What [`ResponseScanner::feed`] found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// All of them belong to the response, and more is to come.
    More,
    /// The final response ends after this many of them; any after that
    /// belong to no response.
    End(usize),
}

/// One request's response, followed as its bytes arrive.
#[derive(Debug, Clone)]
pub struct ResponseScanner {
    state: State,
    head_method: bool,
    /// A head that did not arrive in one piece, gathered until complete
    /// (empty, with no allocation, in the usual case).
    head: Vec<u8>,
    close: bool,
}

impl ResponseScanner {
    /// `head_method`: the request was a HEAD (its response has no body).
    pub fn new(head_method: bool) -> ResponseScanner {
        ResponseScanner {
            state: State::Head,
            head_method,
            head: Vec::new(),
            close: false,
        }
    }

    /// The method is known only once the request's first bytes are written.
    pub fn set_head_method(&mut self, head_method: bool) {
        self.head_method = head_method;
    }

    /// The final response is whole.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The final response is whole and the connection may carry another
    /// request (as far as the response says).
    pub fn reusable(&self) -> bool {
        self.done() && !self.close
    }

    /// The origin closed the connection: a body delimited by the close
    /// ends here (anything else unfinished is pingora's to report).
    pub fn eof(&mut self) {
        if matches!(self.state, State::UntilClose | State::Tunnel) {
            self.close = true;
            self.state = State::Done;
        }
    }

    /// Reads the next bytes from upstream.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Fed, BadResponse> {
        let mut i = 0;
        while i < bytes.len() {
            match &mut self.state {
                State::Head => i += self.head_bytes(&bytes[i..])?,
                State::Length(left) => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    i += take as usize;
                    *left -= take;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                }
                State::Chunked(scanner) => match scanner.feed(&bytes[i..]) {
                    Ok(Some(end)) => {
                        i += end;
                        self.state = State::Done;
                    }
                    Ok(None) => i = bytes.len(),
                    Err(_) => return Err(self.broken(BadResponse("malformed chunked framing"))),
                },
                State::UntilClose | State::Tunnel => i = bytes.len(),
                State::Done => return Ok(Fed::End(i)),
                State::Broken(bad) => return Err(*bad),
            }
        }
        Ok(match self.state {
            State::Done => Fed::End(i),
            _ => Fed::More,
        })
    }

    /// Reads head bytes from the start of `bytes`; returns how many belong
    /// to the head (all of them while it is incomplete).
    fn head_bytes(&mut self, bytes: &[u8]) -> Result<usize, BadResponse> {
        // Usually the whole head comes in one read: parsed where it lies.
        // A head longer than MAX_RESPONSE_HEAD is refused however it
        // arrives: whole in one read, or gathered (capped at MAX + 1 bytes).
        let (parsed, used) = if self.head.is_empty() {
            match parse_response_head(bytes, self.head_method) {
                Ok(Some((len, _))) if len > MAX_RESPONSE_HEAD => {
                    return Err(self.broken(BadResponse("response head too long")))
                }
                Ok(Some((len, framing))) => (framing, len),
                Ok(None) => {
                    if bytes.len() > MAX_RESPONSE_HEAD {
                        return Err(self.broken(BadResponse("response head too long")));
                    }
                    self.head.extend_from_slice(bytes);
                    return Ok(bytes.len());
                }
                Err(bad) => return Err(self.broken(bad)),
            }
        } else {
            let before = self.head.len();
            let take = bytes.len().min(MAX_RESPONSE_HEAD + 1 - before);
            self.head.extend_from_slice(&bytes[..take]);
            match parse_response_head(&self.head, self.head_method) {
                Ok(Some((len, _))) if len > MAX_RESPONSE_HEAD => {
                    return Err(self.broken(BadResponse("response head too long")))
                }
                Ok(Some((len, framing))) => {
                    self.head.clear();
                    (framing, len - before)
                }
                Ok(None) if self.head.len() > MAX_RESPONSE_HEAD => {
                    return Err(self.broken(BadResponse("response head too long")))
                }
                Ok(None) => return Ok(take),
                Err(bad) => return Err(self.broken(bad)),
            }
        };
        self.begin(parsed);
        Ok(used)
    }

    fn begin(&mut self, framing: HeadFraming) {
        let informational = (100..200).contains(&framing.status) && framing.status != 101;
        if informational {
            // A final response follows; its own head decides.
            return;
        }
        self.close = framing.close;
        self.state = match framing.body {
            ResponseBody::Empty | ResponseBody::Length(0) => State::Done,
            ResponseBody::Length(len) => State::Length(len),
            ResponseBody::Chunked => State::Chunked(ChunkedScanner::default()),
            ResponseBody::UntilClose => State::UntilClose,
            ResponseBody::Tunnel => State::Tunnel,
        };
    }

    fn broken(&mut self, bad: BadResponse) -> BadResponse {
        self.head = Vec::new();
        self.state = State::Broken(bad);
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step`; where the response ended.
    fn end_of(bytes: &[u8], step: usize, head_method: bool) -> Result<Option<usize>, BadResponse> {
        let mut scanner = ResponseScanner::new(head_method);
        let mut offset = 0;
        for piece in bytes.chunks(step) {
            if let Fed::End(end) = scanner.feed(piece)? {
                return Ok(Some(offset + end));
            }
            offset += piece.len();
        }
        Ok(None)
    }

    /// Found while writing the `response_scanner` fuzz target: a complete
    /// head over the limit passed when it came in one read and failed when
    /// gathered over several.
    #[test]
    fn a_long_head_is_refused_however_it_is_read() {
        // Few, long lines: past MAX_RESPONSE_HEADERS it would be refused
        // for its line count instead.
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        let filler = format!("X-Filler: {}\r\n", "a".repeat(4000));
        while head.len() <= MAX_RESPONSE_HEAD {
            head.extend_from_slice(filler.as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        for step in [head.len(), 4096, 1000] {
            assert_eq!(
                end_of(&head, step, false),
                Err(BadResponse("response head too long")),
                "step {step}"
            );
        }
        // At the limit exactly, it is taken either way.
        let mut at_limit = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        let tail = b"\r\nContent-Length: 0\r\n\r\n";
        at_limit.resize(MAX_RESPONSE_HEAD - tail.len(), b'a');
        at_limit.extend_from_slice(tail);
        assert_eq!(at_limit.len(), MAX_RESPONSE_HEAD);
        for step in [at_limit.len(), 4096, 1000] {
            assert_eq!(end_of(&at_limit, step, false), Ok(Some(MAX_RESPONSE_HEAD)));
        }
    }

    #[test]
    fn finds_the_end_whatever_the_read_sizes() {
        let cases: [(&[u8], bool); 6] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: v\r\n\r\n",
                false,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n", false),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                false,
            ),
        ];
        for (bytes, head) in cases {
            for step in 1..=bytes.len() {
                assert_eq!(
                    end_of(bytes, step, head),
                    Ok(Some(bytes.len())),
                    "{} step {step}",
                    bytes.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn bytes_after_the_response_are_not_part_of_it() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
        let mut scanner = ResponseScanner::new(false);
        assert_eq!(scanner.feed(bytes), Ok(Fed::End(40)));
        assert!(scanner.reusable());
    }

    #[test]
    fn close_and_close_delimited_bodies_are_not_reusable() {
        let mut scanner = ResponseScanner::new(false);
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(scanner.feed(closing), Ok(Fed::End(closing.len())));
        assert!(scanner.done() && !scanner.reusable());

        let mut scanner = ResponseScanner::new(false);
        assert_eq!(scanner.feed(b"HTTP/1.1 200 OK\r\n\r\nabc"), Ok(Fed::More));
        scanner.eof();
        assert!(scanner.done() && !scanner.reusable());

        let mut scanner = ResponseScanner::new(false);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(scanner.feed(old), Ok(Fed::End(old.len())));
        assert!(!scanner.reusable());
    }

    #[test]
    fn unframeable_responses_are_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            for step in [1, 7, bad.len()] {
                assert!(
                    end_of(bad, step, false).is_err(),
                    "{} step {step}",
                    bad.escape_ascii()
                );
            }
        }
    }

    #[test]
    fn a_refusal_sticks_and_an_endless_head_is_refused() {
        let mut scanner = ResponseScanner::new(false);
        assert!(scanner
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
            .is_err());
        assert!(scanner.feed(b"HTTP/1.1 200 OK\r\n\r\n").is_err());

        let mut scanner = ResponseScanner::new(false);
        assert_eq!(scanner.feed(b"HTTP/1.1 200 OK\r\nX-Big: "), Ok(Fed::More));
        let filler = vec![b'a'; 4096];
        let mut refused = false;
        for _ in 0..(MAX_RESPONSE_HEAD / filler.len() + 2) {
            if scanner.feed(&filler).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a head past {MAX_RESPONSE_HEAD} bytes is refused");
    }

    #[test]
    fn a_tunnel_passes_everything_and_is_never_reused() {
        let mut scanner = ResponseScanner::new(false);
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(scanner.feed(head), Ok(Fed::More));
        assert_eq!(scanner.feed(b"\x00\xff\r\r\n"), Ok(Fed::More));
        scanner.eof();
        assert!(!scanner.reusable());
    }
}
