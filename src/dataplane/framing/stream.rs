//! The framing rules on pingora's path: [`StrictStream`] wraps a client
//! connection before pingora's HTTP/1 session reads it, and runs every
//! request head and body through [`super::parse_request_head`] and the
//! strict [`ChunkedScanner`] first.
//!
//! pingora's own parser is more lenient than the rules (it percent-encodes
//! bad request-target bytes, takes an empty chunk-size line as the last
//! chunk, reduces `gzip, chunked` to chunked), and pingora has no hook
//! between reading bytes and parsing them, so the rules sit in the stream:
//!
//! - A head is held until it is complete, then judged. An accepted head
//!   goes on unchanged. A refused one never reaches pingora: in its place
//!   pingora reads a stand-in head marked [`REFUSED_MARK`], which the
//!   proxy's `request_filter` answers with the refusal's status ([`refused`])
//!   — so the answer comes in order, after any earlier pipelined response.
//!   Nothing after a refused head is read.
//! - A chunked body goes through the scanner; at a framing error the read
//!   fails, before the bad bytes reach pingora, and [`body_refused`] tells
//!   `fail_to_proxy` to answer 400.
//! - `Upgrade` and `CONNECT` requests turn the connection into a tunnel
//!   (no more HTTP once the origin switches); it is passed through.
//!
//! Used only on pingora's path; the fast path applies the same rules as it
//! parses.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{Peek, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::{parse_request_head, Body, ChunkedScanner, HeadStatus, Reject};
use crate::dataplane::head_gate::Replay;
use crate::dataplane::head_limit;

/// The field of the stand-in head that stands for a refused request.
pub const REFUSED_MARK: &str = "x-switchyard-refused";

/// Where the client's byte stream stands.
#[derive(Debug)]
enum Track {
    /// Reading a request head: the bytes so far, held back.
    Head(Vec<u8>),
    /// In a `Content-Length` body: bytes left.
    Length(u64),
    Chunked(ChunkedScanner),
    /// No more HTTP to follow (a tunnel, or a head too big to judge).
    Through,
    /// A head was refused: its stand-in is delivered; what the client
    /// sends after it is read and dropped (pingora sees an idle client
    /// until it closes).
    Refused,
    /// A body's framing was refused: reads fail.
    BadBody,
}

/// A client stream whose HTTP/1.1 framing is checked before pingora reads
/// it. See the module doc.
pub struct StrictStream {
    /// Heads longer than this are passed on unjudged (see [`Self::wrap`]).
    max_head: usize,
    head_timeout: Duration,
    /// When the head being held must be whole (set at its first byte).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    inner: Stream,
    track: Track,
    /// Checked bytes for pingora, not yet read by it.
    out: Vec<u8>,
    /// The refusal of the last head, if one was refused.
    verdict: Option<Reject>,
    /// The refused head's first line (bounded), for its access-log line:
    /// pingora only sees the stand-in.
    refused_line: Vec<u8>,
    /// Whole heads handed to pingora (stand-ins included).
    heads: u64,
}

impl std::fmt::Debug for StrictStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrictStream")
            .field("inner", &self.inner)
            .field("track", &self.track)
            .finish()
    }
}

impl StrictStream {
    /// Wraps an HTTP/1.x client stream (never an h2 one); a stream that is
    /// already wrapped (pingora hands a kept-alive one back) stays as it is.
    ///
    /// A head longer than `max_head` (`server.max_request_head`) is not
    /// held: its bytes go on unjudged, to the head gate in front of
    /// pingora, which refuses it (431/400). So a connection holds at most
    /// that much here.
    ///
    /// A head held for longer than `head_timeout` from its first byte
    /// (`server.request_head_timeout`) is refused with 408: the head gate
    /// in front only sees a head once it is whole here, so the deadline of
    /// a dripped head is kept here.
    pub fn wrap(inner: Stream, max_head: usize, head_timeout: Duration) -> Stream {
        if inner.as_any().is::<StrictStream>() {
            return inner;
        }
        Box::new(StrictStream {
            max_head,
            head_timeout,
            deadline: None,
            inner,
            track: Track::Head(Vec::new()),
            out: Vec::new(),
            verdict: None,
            refused_line: Vec::new(),
            heads: 0,
        })
    }

    /// How many whole request heads `stream` has handed to pingora so far
    /// (`None` if it is not a [`StrictStream`]). More than pingora has
    /// served means a pipelined head is already in pingora's hands, so
    /// there is nothing to wait for on the socket.
    pub fn heads(stream: &Stream) -> Option<u64> {
        let strict = strict_of(stream)?;
        Some(strict.heads)
    }

    /// Refuses the head being read: pingora reads a stand-in in its place,
    /// answered with `reject`'s status; nothing after it is read.
    fn refuse(&mut self, reject: Reject, head: &[u8]) {
        self.verdict = Some(reject);
        self.heads += 1;
        self.out.extend_from_slice(STAND_IN);
        self.track = Track::Refused;
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        self.refused_line = line[..line.len().min(REFUSED_LINE_MAX)].to_vec();
    }

    /// Runs `raw` (bytes as they came from the client) through the rules,
    /// appending what pingora may read to `out`.
    fn check(&mut self, mut raw: &[u8]) {
        while !raw.is_empty() {
            match &mut self.track {
                Track::Head(head) => {
                    if head.is_empty() {
                        self.deadline = Some(Box::pin(tokio::time::sleep(self.head_timeout)));
                    }
                    // Exact: a held head costs what it holds, not double.
                    head.reserve_exact(raw.len());
                    head.extend_from_slice(raw);
                    raw = &[];
                    let judged = parse_request_head(head);
                    let head = std::mem::take(head);
                    match judged {
                        Ok(HeadStatus::Partial) if head.len() <= self.max_head => {
                            self.track = Track::Head(head);
                        }
                        // Over `max_request_head`, whole or not: refused
                        // here (431, or 400 for the request line alone),
                        // so no more of it is held.
                        Ok(HeadStatus::Partial) => {
                            self.refuse(oversize(&head, self.max_head), &head)
                        }
                        Ok(HeadStatus::Complete { head_len, .. }) if head_len > self.max_head => {
                            self.refuse(oversize(&head, self.max_head), &head)
                        }
                        Ok(HeadStatus::TooManyHeaders) => {
                            self.out.extend_from_slice(&head);
                            self.track = Track::Through;
                        }
                        Err(reject) => self.refuse(reject, &head),
                        Ok(HeadStatus::Complete {
                            head_len,
                            body,
                            tunnel,
                        }) => {
                            let start = self.out.len();
                            self.out.extend_from_slice(&head[..head_len]);
                            self.heads += 1;
                            self.track = match body {
                                _ if tunnel => Track::Through,
                                Body::Length(0) => Track::Head(Vec::new()),
                                Body::Length(len) => Track::Length(len),
                                Body::Chunked => Track::Chunked(ChunkedScanner::default()),
                            };
                            // The rest is body or the next head: go round.
                            let rest = head[head_len..].to_vec();
                            self.check(&rest);
                            // A body already broken in the bytes that came
                            // with its head: pingora hasn't seen the head
                            // yet, so the whole request is refused unsent
                            // (as the fast path does).
                            if matches!(self.track, Track::BadBody) {
                                self.out.truncate(start);
                                self.heads -= 1;
                                self.refuse(Reject::BadRequest("malformed chunked body"), &head);
                            }
                            return;
                        }
                    }
                }
                Track::Length(left) => {
                    let take = (*left).min(raw.len() as u64) as usize;
                    self.out.extend_from_slice(&raw[..take]);
                    *left -= take as u64;
                    raw = &raw[take..];
                    if *left == 0 {
                        self.track = Track::Head(Vec::new());
                    }
                }
                Track::Chunked(scanner) => match scanner.feed(raw) {
                    Ok(Some(end)) => {
                        self.out.extend_from_slice(&raw[..end]);
                        raw = &raw[end..];
                        self.track = Track::Head(Vec::new());
                    }
                    Ok(None) => {
                        self.out.extend_from_slice(raw);
                        raw = &[];
                    }
                    Err(_) => {
                        self.track = Track::BadBody;
                        return;
                    }
                },
                Track::Through => {
                    self.out.extend_from_slice(raw);
                    raw = &[];
                }
                Track::Refused | Track::BadBody => return,
            }
        }
    }
}

/// What pingora reads instead of a refused head: a head it accepts, marked
/// so that `request_filter` answers it with the refusal.
const STAND_IN: &[u8] =
    b"GET / HTTP/1.1\r\nhost: refused.invalid\r\nx-switchyard-refused: 1\r\n\r\n";

/// The first line of a refused head kept for the log: the method and a
/// target the log itself would cut at 2 KiB.
const REFUSED_LINE_MAX: usize = 2100;

/// The [`StrictStream`] of a client stream: the stream itself, or the one
/// the head gate's [`Replay`] reads from (pingora's session holds that).
fn strict_of(stream: &Stream) -> Option<&StrictStream> {
    let any = stream.as_any();
    match any.downcast_ref::<StrictStream>() {
        Some(strict) => Some(strict),
        None => any
            .downcast_ref::<Replay>()?
            .inner()
            .as_any()
            .downcast_ref::<StrictStream>(),
    }
}

/// The refusal to answer, if `stream` is a [`StrictStream`] and the head
/// pingora just read is the stand-in for a refused one.
pub fn refused(stream: Option<&Stream>, marked: bool) -> Option<Reject> {
    let strict = strict_of(stream?)?;
    match strict.track {
        Track::Refused if marked => strict.verdict,
        _ => None,
    }
}

/// The first line of the head `stream` refused last, or else of the head
/// it is holding (a head gate in front may time out first): for the log.
pub fn refused_line(stream: Option<&Stream>) -> &[u8] {
    let Some(strict) = stream.and_then(strict_of) else {
        return b"";
    };
    match &strict.track {
        Track::Head(head) if strict.refused_line.is_empty() => {
            let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
            &line[..line.len().min(REFUSED_LINE_MAX)]
        }
        _ => &strict.refused_line,
    }
}

/// Did a request body's chunked framing fail the rules on `stream`?
pub fn body_refused(stream: Option<&Stream>) -> bool {
    stream
        .and_then(strict_of)
        .is_some_and(|s| matches!(s.track, Track::BadBody))
}

fn bad_body() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, super::BadChunk)
}

impl AsyncRead for StrictStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Each round reads once from the client; a round that yields
        // nothing for pingora (a head still incomplete) reads again, so
        // the bound is the client's bytes.
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if let Track::BadBody = this.track {
                return Poll::Ready(Err(bad_body()));
            }
            match (&this.track, this.deadline.as_mut()) {
                (Track::Head(head), Some(deadline)) if !head.is_empty() => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.deadline = None;
                        let head = match &mut this.track {
                            Track::Head(head) => std::mem::take(head),
                            _ => Vec::new(),
                        };
                        this.refuse(Reject::TimedOut, &head);
                        continue;
                    }
                }
                _ => this.deadline = None,
            }
            let mut raw = [0u8; 16 * 1024];
            let mut raw_buf = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut *this.inner).poll_read(cx, &mut raw_buf))?;
            let fresh = raw_buf.filled();
            if let Track::Refused = this.track {
                if fresh.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if fresh.is_empty() {
                // End of stream: a held partial head goes on as it is, for
                // pingora to see it cut short.
                if let Track::Head(head) = &mut this.track {
                    this.out = std::mem::take(head);
                    this.track = Track::Through;
                    if !this.out.is_empty() {
                        continue;
                    }
                }
                return Poll::Ready(Ok(()));
            }
            this.check(fresh);
        }
    }
}

impl AsyncWrite for StrictStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

crate::dataplane::wrapped::delegate_to_inner!(StrictStream);

#[async_trait]
impl Peek for StrictStream {
    /// pingora peeks one byte to see that a next request is coming: fill
    /// `out` (through the rules) until it holds enough, leaving it there.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut tmp = vec![0u8; buf.len().max(1)];
        // Bounded by the client's bytes: each round reads at least one.
        while self.out.len() < buf.len() {
            match self.track {
                // Never another request after a refused one.
                Track::Refused => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Track::BadBody => return Err(bad_body()),
                _ => {}
            }
            let read = self.inner.read(&mut tmp).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let fresh = tmp[..read].to_vec();
            self.check(&fresh);
        }
        buf.copy_from_slice(&self.out[..buf.len()]);
        Ok(true)
    }
}

/// The refusal of a head longer than `max`: 431, or 400 when even its
/// request line does not end within the limit (as the head gate says).
fn oversize(head: &[u8], max: usize) -> Reject {
    if head_limit::refusal(head, max) == head_limit::TOO_LARGE {
        Reject::TooLarge
    } else {
        Reject::LineTooLong
    }
}
