//! The client streams the fast path serves: a plain TCP connection, or a
//! TLS one after its handshake (ALPN http/1.1 or none). Both are read and
//! written the same way; they differ in how an idle connection waits for
//! its next request, and in how a request the fast path does not carry is
//! handed to pingora with its bytes put back.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::dataplane::head_gate::Replay;

/// What ended an idle connection's wait for its next request.
pub enum Arrival {
    /// The request's first byte (read into the waiting future, no buffer).
    Byte(u8),
    /// The socket has something to read (bytes or its close): the reader
    /// reads it straight into the request buffer.
    Readable,
    /// The client closed.
    Closed,
}

/// A client connection the fast path can serve.
pub trait Client: AsyncRead + AsyncWrite + Unpin + Send {
    /// The stream pingora serves from here on, whose next reads return
    /// `bytes` (what the fast path read of the request it hands over).
    fn hand_over(self, bytes: &[u8]) -> Stream;

    /// Waits for the next request of an idle connection without holding
    /// a buffer for it.
    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Arrival>>;
}

/// Plain TCP: pingora's own stream puts bytes back (its rewind buffer).
/// The listener gives it no read buffer (`process/server.rs`), so a
/// request is read from the socket straight into the request buffer.
impl Client for Box<L4Stream> {
    fn hand_over(mut self, bytes: &[u8]) -> Stream {
        self.rewind(bytes);
        self
    }

    /// A read of no bytes: tokio's TCP read waits for readiness first,
    /// then its `recv` of 0 bytes returns at once and leaves the readiness
    /// set, so the read that follows gets the bytes (or the close).
    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Arrival>> {
        let mut nothing = ReadBuf::new(&mut []);
        ready!(Pin::new(&mut **self).poll_read(cx, &mut nothing))?;
        Poll::Ready(Ok(Arrival::Readable))
    }
}

/// TLS (pingora's TLS stream, boxed): the bytes are plaintext, which the
/// stream under the TLS layer can't take back, so a [`Replay`] in front
/// of it replays them (the head gate's [`Replay`]).
impl Client for Stream {
    fn hand_over(self, bytes: &[u8]) -> Stream {
        if bytes.is_empty() {
            return self;
        }
        Box::new(Replay::rewound(self, bytes.to_vec()))
    }

    /// A read of one byte: a read of none would return at once without
    /// waiting (the TLS layer reads records only to fill a buffer), and
    /// the record's other bytes stay in rustls's plaintext buffer for the
    /// read that follows (no second `recv`).
    fn poll_arrival(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Arrival>> {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        ready!(Pin::new(&mut *self).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(match buf.filled() {
            [first] => Arrival::Byte(*first),
            _ => Arrival::Closed,
        }))
    }
}
