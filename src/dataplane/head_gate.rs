//! The gate in front of pingora's HTTP/1 session: a request head is read
//! whole, within `max_request_head` and `request_head_timeout`, before
//! pingora sees any of it.
//!
//! pingora 0.9 has no setting for either: its session accepts heads up to
//! 1 MiB and only times out single reads (60 s between bytes), so a client
//! dripping a byte a minute, or 300 clients each sending an unterminated
//! 1 MB head, held connections and memory for as long as they liked. Here
//! the head is read into a buffer that never grows past `max_request_head`,
//! against one deadline from its first byte; then [`Replay`] hands the
//! bytes to pingora, which parses them without waiting on the client.
//! Plain and TLS connections go through the same gate.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{Peek, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::head_limit::{refusal, HeadDeadline, HeadLimits, HeadScan, TIMED_OUT};

/// How long a refusal may take to write.
const ANSWER_WRITE: Duration = Duration::from_secs(5);
/// After a refusal, what the client still sends is read and dropped for
/// this long (or this much) before the socket closes: closing with unread
/// bytes resets the connection, and a reset can destroy the answer before
/// the client reads it (the "lingering close" of HAProxy and nginx).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
/// The buffer a head starts with; it doubles as the head grows, up to
/// `max_request_head`.
const FIRST_BUFFER: usize = 2048;

/// How the next head begins.
pub enum Arrival {
    /// An idle connection: wait (up to `idle_timeout`) for its first byte.
    Idle,
    /// Its first bytes are already in the stream (handed over by the fast
    /// path), with the deadline it started, if it started one.
    Here(Option<HeadDeadline>),
}

/// What became of the next head.
pub enum Gate {
    /// All of it is buffered in the [`Replay`]: hand it to pingora.
    Ready,
    /// The client closed, idled out, or the server is shutting down.
    Closed,
    /// Over a limit: send this answer, then close ([`refuse`]). What came
    /// of the head is in [`Replay::refused_head`].
    Refused(&'static [u8]),
}

/// Reads the next request head into `stream`'s replay buffer, whole, or
/// says why not.
pub async fn next_head(
    stream: &mut Replay,
    limits: &HeadLimits,
    arrival: Arrival,
    shutdown: &ShutdownWatch,
) -> Gate {
    let mut head = stream.take_pending();
    let deadline = match arrival {
        Arrival::Here(Some(deadline)) => deadline,
        Arrival::Here(None) => HeadDeadline::starting_now(limits),
        // Bytes left over by the last request are where the next begins.
        Arrival::Idle if !head.is_empty() => HeadDeadline::starting_now(limits),
        Arrival::Idle => {
            let Some(first) = first_byte(&mut stream.inner, limits.idle, shutdown).await else {
                return Gate::Closed;
            };
            head.reserve_exact(FIRST_BUFFER);
            head.push(first);
            HeadDeadline::starting_now(limits)
        }
    };
    let mut scan = HeadScan::default();
    loop {
        if scan.end(&head).is_some() {
            stream.pending = head;
            return Gate::Ready;
        }
        if head.len() >= limits.max {
            let answer = refusal(&head, limits.max);
            stream.pending = head;
            return Gate::Refused(answer);
        }
        let filled = head.len();
        let room = filled.max(FIRST_BUFFER).saturating_mul(2).min(limits.max);
        head.reserve_exact(room - filled);
        head.resize(room, 0);
        let read = stream.inner.read(&mut head[filled..]);
        match tokio::time::timeout(deadline.remaining(), read).await {
            Err(_) => {
                head.truncate(filled);
                stream.pending = head;
                return Gate::Refused(TIMED_OUT);
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Gate::Closed,
            Ok(Ok(n)) => head.truncate(filled + n),
        }
    }
}

/// The first byte of an idle connection's next request; `None` if it
/// closes, idles out, or the server shuts down (at once if it already is).
async fn first_byte(stream: &mut Stream, idle: Duration, shutdown: &ShutdownWatch) -> Option<u8> {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return None;
    }
    let mut byte = [0u8; 1];
    tokio::select! {
        read = tokio::time::timeout(idle, stream.read(&mut byte)) => {
            matches!(read, Ok(Ok(1))).then_some(byte[0])
        }
        _ = shutdown.changed() => None,
    }
}

/// Sends `answer`, ends the connection's writing side, and drops what the
/// client still sends for a bounded time before the caller closes it.
/// Nothing read here is kept or forwarded.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(stream: &mut S, answer: &[u8]) {
    let write = async {
        stream.write_all(answer).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(stream).await
    };
    if !matches!(tokio::time::timeout(ANSWER_WRITE, write).await, Ok(Ok(()))) {
        return;
    }
    let until = tokio::time::Instant::now() + LINGER;
    // On the heap: only refused connections pay for it, and it stays out
    // of every connection's future.
    let mut sink = vec![0u8; 4096];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// A client stream whose next bytes are a buffered request head (and what
/// came with it): pingora reads those first, then the stream itself.
/// Everything else (TLS details, digests, shutdown) is the stream's own.
#[derive(Debug)]
pub struct Replay {
    inner: Stream,
    pending: Vec<u8>,
    /// How much of `pending` has been read.
    at: usize,
}

impl Replay {
    pub fn new(inner: Stream) -> Replay {
        Replay {
            inner,
            pending: Vec::new(),
            at: 0,
        }
    }

    /// A stream whose next reads are `bytes`, read from it before (the
    /// request a TLS connection's fast path hands to pingora: decrypted
    /// bytes can't go back under the TLS layer).
    pub fn rewound(inner: Stream, bytes: Vec<u8>) -> Replay {
        Replay {
            inner,
            pending: bytes,
            at: 0,
        }
    }

    /// The stream it replays in front of (the framing rules' stream).
    pub fn inner(&self) -> &Stream {
        &self.inner
    }

    /// What a refused head got to before it was refused (its log line).
    pub fn refused_head(&self) -> &[u8] {
        &self.pending[self.at..]
    }

    /// The bytes not read yet, out of the buffer.
    fn take_pending(&mut self) -> Vec<u8> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.drain(..std::mem::take(&mut self.at));
        pending
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.pending.len() {
            let n = buf.remaining().min(this.pending.len() - this.at);
            buf.put_slice(&this.pending[this.at..this.at + n]);
            this.at += n;
            if this.at == this.pending.len() {
                // Read out: the buffer is not kept for the connection's life.
                this.pending = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

crate::dataplane::wrapped::delegate_to_inner!(Replay);

#[async_trait]
impl Peek for Replay {
    /// Peeks the replay buffer while it has bytes, else the stream.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let pending = &self.pending[self.at..];
        if pending.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        let n = buf.len().min(pending.len());
        buf[..n].copy_from_slice(&pending[..n]);
        Ok(true)
    }
}
