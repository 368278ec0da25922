//! `request_head_timeout` for HTTP/2 request heads.
//!
//! pingora 0.9 and the `h2` crate have no deadline for a header block: a
//! HEADERS frame without END_HEADERS, followed by CONTINUATION frames a
//! byte at a time, holds a connection (and h2's growing header buffer) for
//! as long as the client likes. [`H2Watchdog`] sits between the accepted
//! stream and pingora's HTTP/2 server and reads the frame headers as the
//! bytes go by (nothing is changed or held back): a header block — from the
//! first byte of its HEADERS frame's header through the end of the frame
//! that carries END_HEADERS — must be whole within `request_head_timeout`.
//! Past it, the watchdog writes a GOAWAY with ENHANCE_YOUR_CALM (when the
//! server's own output is between frames, so the frame can't land inside
//! one of h2's) and fails the read, so h2 drops the connection and pingora
//! closes it.
//!
//! Cost: a few integer steps per frame header; a clock read and a timer
//! only for a header block still open when the socket has nothing more to
//! give (a normal head comes in one read and never arms it).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{Peek, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// RFC 9113 §3.4: what a client sends before its first frame.
const PREFACE_LEN: u32 = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
/// RFC 9113 §7.
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Follows frame boundaries in one direction of an HTTP/2 connection.
#[derive(Debug, Default, Clone, Copy)]
struct Frames {
    /// Bytes to pass before frames start (the client preface).
    skip: u32,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    /// Payload bytes left in the current frame.
    payload: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Frames {
    /// Between frames (no frame header or payload half read).
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.header_len == 0 && self.payload == 0
    }

    /// Steps over `bytes`; `event` is told of each frame header read whole
    /// and of each frame's end.
    fn step(&mut self, bytes: &[u8], mut event: impl FnMut(Event, &Frames)) {
        let mut i = 0;
        while i < bytes.len() {
            let rest = (bytes.len() - i) as u32;
            if self.skip > 0 {
                let take = self.skip.min(rest);
                self.skip -= take;
                i += take as usize;
                continue;
            }
            if self.payload > 0 {
                let take = self.payload.min(rest);
                self.payload -= take;
                i += take as usize;
                if self.payload == 0 {
                    event(Event::End, self);
                }
                continue;
            }
            self.header[self.header_len] = bytes[i];
            self.header_len += 1;
            i += 1;
            if self.header_len == FRAME_HEADER {
                let h = self.header;
                self.header_len = 0;
                self.payload = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                self.kind = h[3];
                self.flags = h[4];
                self.stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                event(Event::Header, self);
                if self.payload == 0 {
                    event(Event::End, self);
                }
            }
        }
    }

    fn is_head(&self) -> bool {
        self.kind == HEADERS || self.kind == CONTINUATION
    }
}

/// What [`Frames::step`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A frame header was read whole.
    Header,
    /// A frame's last byte was read.
    End,
}

/// The HTTP/2 server's stream, watched for slow request heads.
pub struct H2Watchdog {
    inner: Stream,
    timeout: Duration,
    heads: Heads,
    outgoing: Frames,
    timer: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

/// The client's side: where its request heads begin and end.
#[derive(Debug, Clone)]
struct Heads {
    incoming: Frames,
    /// A header block is open: a HEADERS frame without END_HEADERS came,
    /// and not yet the CONTINUATION that ends it.
    in_block: bool,
    /// When the open head began (to the read it came in; see the module
    /// doc), `None` while none is open.
    started: Option<Instant>,
    /// The stream of the last header block completed (GOAWAY's last id).
    last_stream: u32,
}

impl H2Watchdog {
    /// Watches `inner`, an HTTP/2 connection whose client preface is still
    /// to be read (pingora's h2c detection only peeks it).
    pub fn new(inner: Stream, timeout: Duration) -> H2Watchdog {
        H2Watchdog {
            inner,
            timeout,
            heads: Heads::new(),
            outgoing: Frames::default(),
            timer: None,
            expired: false,
        }
    }

    /// Past the deadline: GOAWAY (ENHANCE_YOUR_CALM) if it can go between
    /// the server's frames, then the read fails.
    fn expire(&mut self, cx: &mut Context<'_>) -> io::Error {
        self.expired = true;
        if self.outgoing.at_boundary() {
            let mut goaway = [0u8; FRAME_HEADER + 8];
            goaway[2] = 8;
            goaway[3] = GOAWAY;
            goaway[FRAME_HEADER..FRAME_HEADER + 4]
                .copy_from_slice(&self.heads.last_stream.to_be_bytes());
            goaway[FRAME_HEADER + 4..].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
            // One try: the connection is being dropped either way.
            if let Poll::Ready(Ok(n)) = Pin::new(&mut *self.inner).poll_write(cx, &goaway) {
                self.outgoing.step(&goaway[..n], |_, _| {});
                let _ = Pin::new(&mut *self.inner).poll_flush(cx);
            }
        }
        log::debug!("HTTP/2 request head not complete within {:?}", self.timeout);
        timed_out()
    }

    /// Has the open head's deadline passed? Arms the timer (waking `cx`)
    /// when it has not.
    fn overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(started) = self.heads.started else {
            return false;
        };
        let deadline = started + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Heads {
    fn new() -> Heads {
        Heads {
            incoming: Frames {
                skip: PREFACE_LEN,
                ..Frames::default()
            },
            in_block: false,
            started: None,
            last_stream: 0,
        }
    }

    /// Steps over bytes the client sent. A "head" here runs from the
    /// first byte of a frame header to the end of that header when the
    /// frame is not part of a header block, else to the end of the frame
    /// with END_HEADERS.
    fn scan(&mut self, bytes: &[u8], now: impl FnOnce() -> Instant) {
        let mut in_block = self.in_block;
        let mut last_stream = self.last_stream;
        // A head ended in these bytes: whatever is open at their end
        // began in them.
        let mut ended = false;
        self.incoming.step(bytes, |event, frame| match event {
            Event::Header => {
                if frame.kind == HEADERS && frame.flags & END_HEADERS == 0 {
                    in_block = true;
                } else if !frame.is_head() && !in_block {
                    ended = true;
                }
            }
            Event::End => {
                if frame.is_head() && frame.flags & END_HEADERS != 0 {
                    in_block = false;
                    ended = true;
                    last_stream = frame.stream;
                }
            }
        });
        self.in_block = in_block;
        self.last_stream = last_stream;
        let frame = &self.incoming;
        let open = self.in_block || frame.header_len > 0 || (frame.payload > 0 && frame.is_head());
        if !open {
            self.started = None;
        } else if ended || self.started.is_none() {
            self.started = Some(now());
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "HTTP/2 request head timed out")
}

impl std::fmt::Debug for H2Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Watchdog")
            .field("in_block", &self.heads.in_block)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for H2Watchdog {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = buf.filled().len() - before;
                if fresh > 0 {
                    this.heads.scan(&buf.filled()[before..], Instant::now);
                    // A drip that keeps the reads coming is timed too.
                    if this
                        .heads
                        .started
                        .is_some_and(|s| s.elapsed() >= this.timeout)
                    {
                        return Poll::Ready(Err(this.expire(cx)));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.overdue(cx) {
                    return Poll::Ready(Err(this.expire(cx)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for H2Watchdog {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.outgoing.step(&buf[..n], |_, _| {});
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut *this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            let mut left = n;
            for slice in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(slice.len());
                this.outgoing.step(&slice[..take], |_, _| {});
                left -= take;
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

crate::dataplane::wrapped::delegate_to_inner!(H2Watchdog);

#[async_trait]
impl Peek for H2Watchdog {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frame_boundaries_are_followed_whatever_the_pieces() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, &[]));
        bytes.extend(frame(HEADERS, 0, 1, b"abc"));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, b"de"));
        bytes.extend(frame(0x0, 0x1, 1, b"body"));
        for step in 1..bytes.len() {
            let mut frames = Frames {
                skip: PREFACE_LEN,
                ..Frames::default()
            };
            let mut ends = Vec::new();
            for piece in bytes.chunks(step) {
                frames.step(piece, |event, f| {
                    if event == Event::End {
                        ends.push((f.kind, f.flags, f.stream))
                    }
                });
            }
            assert!(frames.at_boundary(), "step {step}");
            assert_eq!(
                ends,
                [
                    (0x4, 0, 0),
                    (HEADERS, 0, 1),
                    (CONTINUATION, END_HEADERS, 1),
                    (0x0, 0x1, 1)
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn only_an_unfinished_head_is_timed() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut heads = Heads::new();
        heads.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", || t0);
        assert_eq!(heads.started, None);
        // A whole head in one read: never timed.
        heads.scan(&frame(HEADERS, END_HEADERS | 0x1, 1, b"abc"), || t0);
        assert_eq!(heads.started, None);
        // A head without END_HEADERS: timed from its read ...
        heads.scan(&frame(HEADERS, 0x1, 3, b"abc"), || t0);
        assert_eq!(heads.started, Some(t0));
        // ... through its CONTINUATIONs, however they drip.
        let last = frame(CONTINUATION, END_HEADERS, 3, b"d");
        heads.scan(&last[..4], || later);
        assert_eq!(heads.started, Some(t0));
        heads.scan(&last[4..], || later);
        assert_eq!(heads.started, None);
        assert_eq!(heads.last_stream, 3);
        // Back-to-back heads whose reads each end inside the next one: each
        // is timed from its own read, not the first.
        let mut flood = Vec::new();
        for stream in [5u32, 7, 9] {
            flood.extend(frame(HEADERS, END_HEADERS, stream, b"hpack"));
        }
        heads.scan(&flood[..10], || t0);
        assert_eq!(heads.started, Some(t0));
        heads.scan(&flood[10..20], || later);
        assert_eq!(heads.started, Some(later));
        heads.scan(&flood[20..], || later);
        assert_eq!(heads.started, None);
        // A DATA frame's payload is not a head.
        heads.scan(&frame(0x0, 0, 5, b"body-bytes")[..12], || later);
        assert_eq!(heads.started, None);
    }
}
