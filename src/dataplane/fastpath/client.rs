//! The client streams the fast path serves: a plain TCP connection, or a
//! TLS one after its handshake (ALPN http/1.1 or none). Both are read and
//! written the same way; they differ in how a request the fast path does
//! not carry is handed to pingora with its bytes put back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Peek, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client connection the fast path can serve.
pub trait Client: AsyncRead + AsyncWrite + Unpin + Send {
    /// The stream pingora serves from here on, whose next reads return
    /// `bytes` (what the fast path read of the request it hands over).
    fn hand_over(self, bytes: &[u8]) -> Stream;
}

/// Plain TCP: pingora's own stream puts bytes back (its rewind buffer).
impl Client for Box<L4Stream> {
    fn hand_over(mut self, bytes: &[u8]) -> Stream {
        self.rewind(bytes);
        self
    }
}

/// TLS (pingora's TLS stream, boxed): the bytes are plaintext, which the
/// stream under the TLS layer can't take back, so a [`Rewound`] in front
/// of it replays them.
impl Client for Stream {
    fn hand_over(self, bytes: &[u8]) -> Stream {
        if bytes.is_empty() {
            return self;
        }
        Box::new(Rewound {
            inner: self,
            pending: bytes.to_vec(),
            at: 0,
        })
    }
}

/// A stream whose next reads are bytes read from it before (the request a
/// TLS connection's fast path handed over). Everything else is the
/// stream's own.
#[derive(Debug)]
pub struct Rewound {
    inner: Stream,
    pending: Vec<u8>,
    /// How much of `pending` has been read.
    at: usize,
}

impl AsyncRead for Rewound {
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
                // Read out: not kept for the connection's life.
                this.pending = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
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

crate::dataplane::wrapped::delegate_to_inner!(Rewound);

#[async_trait]
impl Peek for Rewound {
    /// Peeks the bytes put back while there are any, else the stream.
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
