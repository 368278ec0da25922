//! Request and response heads on the fast path: parse one, decide whether
//! the fast path may carry the message, and write the head to send on.
//!
//! Everything here is synchronous and works on borrowed buffers: the parsed
//! headers live on the stack only while the outgoing head is written, so no
//! request allocates.

use std::mem::MaybeUninit;

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};

use crate::dataplane::framing::response::{FramingFields as ResponseFields, ResponseBody};
use crate::dataplane::framing::{self, Body, Reject};
use crate::routing::{CookieIssuer, PoolId, RoutingTable, StickyId};

/// Header lines read per request; a request with more takes pingora's path.
pub const MAX_HEADERS: usize = 64;
/// Header lines read per response (responses often carry many `Set-Cookie`
/// lines, and can't be handed over); pingora allows as many.
pub const MAX_RESPONSE_HEADERS: usize = 256;

/// What came of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole head, accepted.
    Done(T),
    /// The head is not complete yet: read more.
    Partial,
    /// Not for the fast path (a feature it leaves to pingora): hand the
    /// bytes to pingora unread.
    Pingora,
    /// Refused by the framing rules ([`framing`]): answer it and close;
    /// nothing is forwarded.
    Reject(Reject),
}

/// The client's address, formatted once per connection for
/// `X-Forwarded-For`.
pub struct ClientAddr {
    pub ip: Option<IpAddr>,
    text: [u8; 40],
    len: usize,
}

impl ClientAddr {
    pub fn new(ip: Option<IpAddr>) -> ClientAddr {
        use std::io::Write;
        let mut text = [0u8; 40];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        if let Some(ip) = ip {
            // 39 bytes is the longest IPv6 text; a failure leaves it empty.
            if write!(cursor, "{ip}").is_err() {
                cursor.set_position(0);
            }
        }
        let len = cursor.position() as usize;
        ClientAddr { ip, text, len }
    }

    fn text(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

/// A request the fast path carries. Its upstream head is already written.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the client's head (the body starts here).
    pub head_len: usize,
    pub body: Body,
    /// The client asked to close after this response.
    pub close: bool,
    /// May be sent again after a reused upstream connection died unanswered
    /// (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// A HEAD request: the response has no body whatever its headers say.
    pub head_method: bool,
    /// The pool chosen for it; `None` when no pool has a share.
    pub pool: Option<PoolId>,
    /// A sticky id issued to this new client (`[sticky] issue_cookie`).
    pub issued: Option<StickyId>,
    /// Why that pool (`route`, `sticky`, `split`), for the access log.
    pub why: &'static str,
}

/// Parses a client's request head from `bytes`; on success chooses the pool
/// and writes the head to send upstream into `out`.
///
/// First the framing rules ([`framing::request_framing`]): what they refuse
/// is a [`Parsed::Reject`], on either path. The fast path then takes plain
/// HTTP/1.1 requests with no body, a `Content-Length` body or a chunked
/// one, `Expect: 100-continue` included. Anything else — HTTP/1.0,
/// `Upgrade`, another expectation, `CONNECT`, absolute-form, a `Connection`
/// header naming other headers, more than [`MAX_HEADERS`] lines — goes to
/// pingora.
pub fn parse_request(
    bytes: &[u8],
    table: &RoutingTable,
    client: &ClientAddr,
    random: u64,
    out: &mut Vec<u8>,
) -> Parsed<Request> {
    // Uninitialised: httparse writes only the lines it finds (zeroing 64
    // slots per message showed up in the profile).
    let mut storage = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(bytes, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Pingora,
        Err(_) => return Parsed::Reject(Reject::BadRequest("malformed request head")),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parsed::Reject(Reject::BadRequest("malformed request line"));
    };
    let body = match framing::request_framing(method, target, version, request.headers) {
        Ok(body) => body,
        Err(reject) => return Parsed::Reject(reject),
    };
    if version != 1 {
        return Parsed::Pingora;
    }
    // Origin form only: an absolute-form target names a host of its own,
    // which pingora checks against Host; CONNECT and `*` are pingora's too.
    if method == "CONNECT" || !target.starts_with('/') {
        return Parsed::Pingora;
    }
    let headers: &[httparse::Header] = request.headers;

    // The rules checked Host, Content-Length and Transfer-Encoding.
    let mut close = false;
    let mut prior_forwarded = false;
    let mut kinds = [RequestField::Other; MAX_HEADERS];
    for (header, kind) in headers.iter().zip(kinds.iter_mut()) {
        *kind = RequestField::of(header.name);
        match *kind {
            RequestField::Connection => {
                for token in tokens(header.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Parsed::Pingora;
                    }
                }
            }
            // The origin sends the 100 (or its final answer) itself; the
            // fast path relays it while it waits for the body.
            RequestField::Expect if header.value.eq_ignore_ascii_case(b"100-continue") => {}
            RequestField::Expect | RequestField::NotOurs => return Parsed::Pingora,
            RequestField::ForwardedFor => prior_forwarded = true,
            RequestField::HopByHop | RequestField::Other => {}
        }
    }

    out.clear();
    let lines = Lines::new(bytes, head_len, headers);
    let request_line = &bytes[offset(bytes, method.as_bytes())..lines.start(0)];
    if request_line.ends_with(b" HTTP/1.1\r\n") {
        out.extend_from_slice(request_line);
    } else {
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
    }
    lines.copy(out, |i| {
        !matches!(
            kinds[i],
            RequestField::Connection | RequestField::HopByHop | RequestField::ForwardedFor
        )
    });
    // One X-Forwarded-For line: what earlier proxies wrote, then this client.
    let client_text = client.text();
    if prior_forwarded || !client_text.is_empty() {
        out.extend_from_slice(b"x-forwarded-for: ");
        let mut first = true;
        let priors = headers
            .iter()
            .zip(kinds)
            .filter(|(_, kind)| *kind == RequestField::ForwardedFor);
        for (header, _) in priors {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(header.value);
            first = false;
        }
        if !client_text.is_empty() {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(client_text);
        }
        out.extend_from_slice(b"\r\n");
    }
    crate::access_log::capture::add_request_id_h1(headers, out);
    out.extend_from_slice(b"\r\n");

    let choice = table.choose_pool(headers, client.ip, random);
    Parsed::Done(Request {
        head_len,
        body,
        close,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head_method: method == "HEAD",
        pool: choice.map(|c| c.pool()),
        issued: choice.and_then(|c| c.issued()),
        why: choice.map_or("", |choice| choice.why()),
    })
}

/// The request header fields the fast path treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestField {
    Connection,
    Expect,
    /// Hop-by-hop fields this hop consumes (`Keep-Alive`, `TE`,
    /// `Proxy-Connection`, `Proxy-Authorization`, `HTTP2-Settings`).
    HopByHop,
    ForwardedFor,
    /// Fields whose semantics the fast path leaves to pingora.
    NotOurs,
    Other,
}

impl RequestField {
    fn of(name: &str) -> RequestField {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        // The length test first keeps the common case to one comparison.
        match name.len() {
            2 if is("te") => RequestField::HopByHop,
            6 if is("expect") => RequestField::Expect,
            7 if is("upgrade") => RequestField::NotOurs,
            10 if is("connection") => RequestField::Connection,
            10 if is("keep-alive") => RequestField::HopByHop,
            15 if is("x-forwarded-for") => RequestField::ForwardedFor,
            14 if is("http2-settings") => RequestField::HopByHop,
            16 if is("proxy-connection") => RequestField::HopByHop,
            19 if is("proxy-authorization") => RequestField::HopByHop,
            _ => RequestField::Other,
        }
    }
}

/// How the length of a response body is known (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// The body ends when the origin closes the connection.
    UntilClose,
}

/// A response head from upstream, checked; the head for the client is
/// already written.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection can't carry another request.
    pub upstream_close: bool,
    /// The head written for the client says `Connection: close`.
    pub client_close: bool,
}

/// The origin's response can't be forwarded safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse;

/// What [`parse_response`] needs to know besides the bytes.
pub struct ResponseContext<'a> {
    pub head_method: bool,
    /// The client's connection closes after this response.
    pub close_client: bool,
    /// The `pool_header` line to add, if configured.
    pub pool_header: Option<(&'a HeaderName, &'a HeaderValue)>,
    /// The sticky cookie to set for a new client.
    pub set_cookie: Option<(&'a CookieIssuer, StickyId)>,
}

/// Parses an upstream response head from `bytes`; on success writes the
/// head for the client into `out`.
pub fn parse_response(
    bytes: &[u8],
    context: &ResponseContext,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, BadResponse> {
    let mut storage = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        bytes,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse);
    };
    // The fast path never asks for an upgrade, so a 101 is a broken origin;
    // httparse takes any three digits, and below 100 is no status at all.
    if status < 100 || status == 101 {
        return Err(BadResponse);
    }
    let headers: &[httparse::Header] = response.headers;

    // The framing rules are pingora's path's too (`framing::response`);
    // this loop also sorts each line for the head written below.
    let mut fields = ResponseFields::new(version);
    let mut kinds = [ResponseField::Other; MAX_RESPONSE_HEADERS];
    for (header, kind) in headers.iter().zip(kinds.iter_mut()) {
        *kind = ResponseField::of(header.name, context.pool_header);
        match *kind {
            ResponseField::ContentLength => fields
                .content_length(header.value)
                .map_err(|_| BadResponse)?,
            ResponseField::TransferEncoding => fields.transfer_encoding(header.value),
            ResponseField::Connection => fields.connection(header.value),
            _ => {}
        }
    }
    let informational = (100..200).contains(&status);
    let body = fields.body(status, context.head_method);
    let framing = match body {
        ResponseBody::Empty => Framing::Empty,
        ResponseBody::Length(len) => Framing::Length(len),
        ResponseBody::Chunked => Framing::Chunked,
        // A 101 (a tunnel) was refused above.
        ResponseBody::UntilClose | ResponseBody::Tunnel => Framing::UntilClose,
    };
    let upstream_close = fields.close_after(body);
    let client_close = !informational && (context.close_client || framing == Framing::UntilClose);

    out.clear();
    let lines = Lines::new(bytes, head_len, headers);
    let status_line = &bytes[..lines.start(0)];
    if version == 1 && status_line.starts_with(b"HTTP/1.1 ") && status_line.ends_with(b"\r\n") {
        out.extend_from_slice(status_line);
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        // httparse accepts exactly three digits.
        out.extend_from_slice(&[
            b'0' + (status / 100) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // With both, Transfer-Encoding frames the body (RFC 9112 §6.3).
    let drop_length = fields.has_coding();
    lines.copy(out, |i| match kinds[i] {
        ResponseField::Connection | ResponseField::HopByHop | ResponseField::PoolHeader => false,
        ResponseField::ContentLength => !drop_length,
        _ => true,
    });
    if !informational {
        if let Some((name, value)) = context.pool_header {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if let Some((issuer, id)) = &context.set_cookie {
            out.extend_from_slice(b"set-cookie: ");
            issuer.write_value(out, id);
            out.extend_from_slice(b"\r\n");
        }
        if client_close {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Response {
        head_len,
        status,
        framing,
        upstream_close,
        client_close,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseField {
    ContentLength,
    TransferEncoding,
    Connection,
    HopByHop,
    /// The configured `pool_header`: replaced by ours.
    PoolHeader,
    Other,
}

impl ResponseField {
    fn of(name: &str, pool_header: Option<(&HeaderName, &HeaderValue)>) -> ResponseField {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        match name.len() {
            10 if is("connection") => ResponseField::Connection,
            10 if is("keep-alive") => ResponseField::HopByHop,
            14 if is("content-length") => ResponseField::ContentLength,
            16 if is("proxy-connection") => ResponseField::HopByHop,
            17 if is("transfer-encoding") => ResponseField::TransferEncoding,
            len if pool_header
                .is_some_and(|(pool, _)| pool.as_str().len() == len && is(pool.as_str())) =>
            {
                ResponseField::PoolHeader
            }
            _ => ResponseField::Other,
        }
    }
}

/// The header lines of a parsed head, to be copied on.
struct Lines<'a> {
    bytes: &'a [u8],
    headers: &'a [httparse::Header<'a>],
    /// Where the header lines end (the final empty line starts).
    end: usize,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8], head_len: usize, headers: &'a [httparse::Header<'a>]) -> Self {
        let head = &bytes[..head_len];
        let end = head_len - if head.ends_with(b"\r\n") { 2 } else { 1 };
        Lines {
            bytes,
            headers,
            end,
        }
    }

    /// Where line `i` starts (`end` past the last one).
    fn start(&self, i: usize) -> usize {
        self.headers
            .get(i)
            .map_or(self.end, |h| offset(self.bytes, h.name.as_bytes()))
    }

    /// Appends the lines `keep` selects. A line that ends in CRLF is copied
    /// verbatim, and a run of them in one copy; a bare-LF line is rewritten
    /// with CRLF, so the next hop never sees a line ending we accepted
    /// leniently.
    fn copy(&self, out: &mut Vec<u8>, keep: impl Fn(usize) -> bool) {
        let mut run = None;
        for (i, header) in self.headers.iter().enumerate() {
            let (start, end) = (self.start(i), self.start(i + 1));
            let kept = keep(i);
            if kept && self.bytes[..end].ends_with(b"\r\n") {
                run.get_or_insert(start);
                continue;
            }
            if let Some(run_start) = run.take() {
                out.extend_from_slice(&self.bytes[run_start..start]);
            }
            if kept {
                write_field(out, header.name.as_bytes(), header.value);
            }
        }
        if let Some(run_start) = run {
            out.extend_from_slice(&self.bytes[run_start..self.end]);
        }
    }
}

/// Where `part` (a slice of `whole`, as httparse returns them) starts.
fn offset(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The comma-separated tokens of a list-valued field, trimmed, empty ones
/// skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
