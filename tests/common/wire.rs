//! The raw-socket HTTP/1.1 client of the conformance and review suites:
//! a [`Wire`] writes exact bytes and parses every response by hand (status
//! line, fields, Content-Length / chunked / close-delimited body, trailers),
//! so framing is checked as it is on the wire, not as a client library
//! would smooth it over. Origins use the same `Wire` to read requests.
//! Every read has a deadline and every loop a bound. Included with
//! `#[path]` by the test binaries that use it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// Bound on reading one whole message (large bodies included), on one
/// write, and on waiting for a close.
pub const MESSAGE: Duration = Duration::from_secs(10);
pub const MAX_HEAD: usize = 4 * 1024 * 1024;
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub fn lossy(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(300)];
    format!("{:?}", String::from_utf8_lossy(shown))
}

/// A deterministic, non-periodic-looking byte pattern (a shifted or
/// truncated copy never matches).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8) ^ ((i / 251) as u8).wrapping_mul(7))
        .collect()
}

/// FNV-1a, 64 bit: the checksum origins echo for request bodies.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One TCP connection with a read buffer; every read has a deadline.
pub struct Wire {
    pub stream: TcpStream,
    /// Bytes read and not consumed yet.
    pub buf: Vec<u8>,
    pub eof: bool,
}

impl Wire {
    pub async fn connect(addr: SocketAddr) -> Wire {
        Wire::try_connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Wire::connect`] for a test that reports a failed connect itself.
    pub async fn try_connect(addr: SocketAddr) -> Result<Wire, String> {
        let stream = tokio::time::timeout(MESSAGE, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr} timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        Ok(Wire::new(stream))
    }

    pub fn new(stream: TcpStream) -> Wire {
        let _ = stream.set_nodelay(true);
        Wire {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(MESSAGE, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("write timed out".to_string()),
        }
    }

    /// One read into the buffer: true if bytes came, false at EOF. A reset
    /// or the deadline is an error.
    pub async fn fill(&mut self, until: Instant) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        self.buf.reserve(64 * 1024);
        match timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(format!(
                "timed out waiting for bytes ({} buffered: {})",
                self.buf.len(),
                lossy(&self.buf)
            )),
            Ok(Err(e)) => Err(format!("read error: {e}")),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(false)
            }
            Ok(Ok(_)) => Ok(true),
        }
    }

    /// Consumes and returns the bytes up to and including `delim`; `None`
    /// if the peer closed before sending any byte.
    pub async fn until(
        &mut self,
        delim: &[u8],
        max: usize,
        until: Instant,
    ) -> Result<Option<Vec<u8>>, String> {
        // Each round either returns or reads at least one more byte, and
        // the buffer is capped at `max`: bounded by size and deadline.
        loop {
            if let Some(pos) = find(&self.buf, delim) {
                let rest = self.buf.split_off(pos + delim.len());
                return Ok(Some(std::mem::replace(&mut self.buf, rest)));
            }
            if self.buf.len() > max {
                return Err(format!("no {delim:?} within {max} bytes"));
            }
            if !self.fill(until).await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "connection closed mid-message: {}",
                        lossy(&self.buf)
                    ))
                };
            }
        }
    }

    /// One message head, through its blank line, within `within`; `None`
    /// on a close, an error or the deadline (for origins that only need to
    /// know a request came).
    pub async fn head(&mut self, within: Duration) -> Option<Vec<u8>> {
        self.until(b"\r\n\r\n", MAX_HEAD, Instant::now() + within)
            .await
            .ok()
            .flatten()
    }

    /// One CRLF-terminated line, without the CRLF.
    pub async fn line(&mut self, until: Instant) -> Result<Vec<u8>, String> {
        let mut line = self
            .until(b"\r\n", 64 * 1024, until)
            .await?
            .ok_or("connection closed where a line was expected")?;
        line.truncate(line.len() - 2);
        Ok(line)
    }

    pub async fn take(&mut self, n: usize, until: Instant) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill(until).await? {
                return Err(format!(
                    "connection closed after {} of {n} body bytes",
                    self.buf.len()
                ));
            }
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    pub async fn read_to_eof(&mut self, until: Instant) -> Result<Vec<u8>, String> {
        while self.fill(until).await? {
            if self.buf.len() > MAX_BODY {
                return Err("close-delimited body larger than 16 MiB".to_string());
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// A chunked body: the decoded bytes, the chunk extensions seen, the
    /// trailer fields.
    pub async fn chunked(&mut self, until: Instant) -> Result<Chunked, String> {
        let mut out = Chunked::default();
        for _ in 0..1_000_000 {
            let line = self.line(until).await?;
            let line = String::from_utf8(line).map_err(|_| "chunk-size line not UTF-8")?;
            let (size, ext) = line.split_once(';').unwrap_or((&line, ""));
            let size = usize::from_str_radix(size.trim_end_matches([' ', '\t']), 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if !ext.is_empty() {
                out.extensions.push(ext.to_string());
            }
            if size == 0 {
                for _ in 0..100 {
                    let trailer = self.line(until).await?;
                    if trailer.is_empty() {
                        return Ok(out);
                    }
                    out.trailers.push(field(&trailer)?);
                }
                return Err("more than 100 trailer fields".to_string());
            }
            if out.body.len() + size > MAX_BODY {
                return Err("chunked body larger than 16 MiB".to_string());
            }
            let data = self.take(size, until).await?;
            out.body.extend_from_slice(&data);
            let crlf = self.take(2, until).await?;
            if crlf != b"\r\n" {
                return Err(format!("chunk data not followed by CRLF: {}", lossy(&crlf)));
            }
        }
        Err("more than a million chunks".to_string())
    }

    /// Waits (bounded) for the peer to close: EOF or reset with no further
    /// byte. Bytes or silence are errors.
    pub async fn closed(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("unexpected bytes: {}", lossy(&self.buf)));
        }
        if self.eof {
            return Ok(());
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(MESSAGE, self.stream.read(&mut byte)).await {
            Err(_) => Err("connection still open".to_string()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                Ok(())
            }
            Ok(Ok(_)) => Err(format!("unexpected byte {byte:?} instead of a close")),
        }
    }

    /// After a response that announced a close: waits for it and connects
    /// to `addr` again, so a loop of requests can go on.
    pub async fn reopen_if_closing(&mut self, r: &Response, addr: SocketAddr) {
        if r.closes() {
            self.closed().await.expect("closed as announced");
            *self = Wire::connect(addr).await;
        }
    }
}

#[derive(Debug, Default)]
pub struct Chunked {
    pub body: Vec<u8>,
    pub extensions: Vec<String>,
    pub trailers: Vec<(String, String)>,
}

pub fn field(line: &[u8]) -> Result<(String, String), String> {
    let line =
        std::str::from_utf8(line).map_err(|_| format!("field not UTF-8: {}", lossy(line)))?;
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("field without colon: {line:?}"))?;
    if name.is_empty() || name.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(format!("bad field name in {line:?}"));
    }
    Ok((
        name.to_string(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// A parsed message head: start line and fields in wire order.
#[derive(Debug, Clone)]
pub struct Head {
    pub start: String,
    pub fields: Vec<(String, String)>,
    pub raw: String,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Result<Head, String> {
        let text =
            std::str::from_utf8(raw).map_err(|_| format!("head not UTF-8: {}", lossy(raw)))?;
        let body = text
            .strip_suffix("\r\n\r\n")
            .ok_or_else(|| format!("head not ending in CRLFCRLF: {text:?}"))?;
        let mut lines = body.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let fields = lines
            .map(|l| field(l.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Head {
            start,
            fields,
            raw: text.to_string(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The message's Content-Length, if any; differing values are an error.
    pub fn content_length(&self) -> Result<Option<usize>, String> {
        let mut values = self
            .all("content-length")
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().parse::<usize>());
        let Some(first) = values.next() else {
            return Ok(None);
        };
        let first = first.map_err(|_| format!("bad content-length in {:?}", self.raw))?;
        for other in values {
            if other != Ok(first) {
                return Err(format!("conflicting content-length in {:?}", self.raw));
            }
        }
        Ok(Some(first))
    }

    pub fn chunked(&self) -> bool {
        self.all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
    }
}

// ---------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------

/// How the body of a response was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HEAD, 1xx, 204, 304: no body by definition.
    NoBody,
    Length,
    Chunked,
    /// Read until the server closed.
    Close,
}

#[derive(Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
    pub framing: Framing,
    pub chunk_extensions: Vec<String>,
    pub trailers: Vec<(String, String)>,
    /// 1xx heads (other than 101) received before this response.
    pub interim: Vec<Head>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.get(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Did the server announce it closes the connection?
    pub fn closes(&self) -> bool {
        self.head.has_token("connection", "close")
            || (self.version == "HTTP/1.0" && !self.head.has_token("connection", "keep-alive"))
    }
}

pub fn status_line(line: &str) -> Result<(String, u16), String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") || code.len() != 3 {
        return Err(format!("bad status line {line:?}"));
    }
    let status = code
        .parse::<u16>()
        .map_err(|_| format!("bad status code in {line:?}"))?;
    Ok((version.to_string(), status))
}

/// Reads one final response (skipping and keeping 1xx heads other than
/// 101), its body delimited as RFC 9112 §6.3 says.
pub async fn read_response(w: &mut Wire, head_request: bool) -> Result<Response, String> {
    let until = Instant::now() + MESSAGE;
    let mut interim = Vec::new();
    for _ in 0..8 {
        let raw = w
            .until(b"\r\n\r\n", MAX_HEAD, until)
            .await?
            .ok_or("connection closed before a response")?;
        let head = Head::parse(&raw)?;
        let (version, status) = status_line(&head.start)?;
        if (100..200).contains(&status) && status != 101 {
            interim.push(head);
            continue;
        }
        let mut response = Response {
            version,
            status,
            framing: Framing::NoBody,
            body: Vec::new(),
            chunk_extensions: Vec::new(),
            trailers: Vec::new(),
            interim,
            head,
        };
        if head_request || matches!(status, 101 | 204 | 304) {
            return Ok(response);
        }
        if response.head.get("transfer-encoding").is_some() {
            if response.head.chunked() {
                let chunked = w.chunked(until).await?;
                response.framing = Framing::Chunked;
                response.body = chunked.body;
                response.chunk_extensions = chunked.extensions;
                response.trailers = chunked.trailers;
            } else {
                response.framing = Framing::Close;
                response.body = w.read_to_eof(until).await?;
            }
        } else if let Some(length) = response.head.content_length()? {
            response.framing = Framing::Length;
            response.body = w.take(length, until).await?;
        } else {
            response.framing = Framing::Close;
            response.body = w.read_to_eof(until).await?;
        }
        return Ok(response);
    }
    Err("more than 8 interim responses".to_string())
}

pub fn first_line(request: &[u8]) -> String {
    let end = find(request, b"\r\n").unwrap_or(request.len().min(80));
    String::from_utf8_lossy(&request[..end]).into_owned()
}

/// Writes `request` and reads its response; any failure panics with the
/// request line.
pub async fn exchange(w: &mut Wire, request: &[u8]) -> Response {
    let what = first_line(request);
    w.send(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let response = read_response(w, request.starts_with(b"HEAD "))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    // Shown with a failing test's output: the conversation so far.
    eprint!("> {what}\n{}", response.head.raw);
    response
}

/// Sends one request on a fresh connection and returns what happened:
/// a response, or how the connection ended without one.
pub async fn attempt(addr: SocketAddr, request: &[u8]) -> Result<Response, String> {
    let mut w = Wire::connect(addr).await;
    // A server may reject and close before reading everything: a failed
    // write is then part of the outcome, not a test failure.
    let written = w.send(request).await;
    match read_response(&mut w, request.starts_with(b"HEAD ")).await {
        Ok(response) => Ok(response),
        Err(e) => Err(format!("{e} (write: {written:?})")),
    }
}
