//! The upstream socket pingora reads an HTTP/1.1 response from: a TCP
//! connection, or a TLS stream over one whose handshake switchyard did
//! ([`super::tls`]), with [`ResponseScanner`] between it and pingora (so
//! for TLS the scanner sees the decrypted bytes).
//!
//! One socket carries exactly one request and its response. Every read is
//! checked before pingora sees it: bytes that break the response framing
//! become an I/O error instead (so a violation in the read that brings the
//! head is a 502, one later a cut), and bytes after the response's end are
//! never handed on. When the response is whole, pingora's next read is its
//! keep-alive probe (`release_stream` reads one byte and pools the stream
//! only if nothing is ready): the socket answers end-of-stream, so pingora
//! drops it, and the TCP connection goes back to switchyard's own idle
//! pool — if pingora had decided to reuse it (it probes only then) and the
//! response ended exactly where its framing says. Any other ending closes
//! it. pingora's own pool can't keep these sockets: it tells connections
//! apart by file descriptor, and a virtual socket has none.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Stale, Unframed};
use crate::dataplane::fastpath::IdlePool;
use crate::dataplane::framing::response::{Fed, ResponseScanner};

/// Where a reusable TCP connection goes when pingora lets its socket go.
#[derive(Clone)]
pub(super) struct Home {
    pub idle: Arc<IdlePool>,
    pub addr: SocketAddr,
    pub capacity: usize,
    pub max_idle: Duration,
}

/// What a strict socket runs over: plaintext TCP or TLS over TCP.
pub(super) trait Upstream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Where the connection goes back to for reuse.
    type Home: Send + Sync + Unpin;
    /// Nothing to read, and not closed: quiet, as an idle connection must be.
    fn quiet(&mut self) -> bool;
    fn nodelay(&self) -> io::Result<()>;
    fn go_home(self, home: &Self::Home);
}

impl Upstream for TcpStream {
    type Home = Home;

    fn quiet(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn nodelay(&self) -> io::Result<()> {
        self.set_nodelay(true)
    }

    fn go_home(self, home: &Home) {
        home.idle
            .put_idle(home.addr, self, home.capacity, home.max_idle);
    }
}

/// Bytes of the request line needed to know whether it is a HEAD.
const METHOD_SNIFF: usize = 5;

pub(super) struct StrictSocket<S: Upstream> {
    /// `None` once handed back to the idle pool (only in `drop`).
    tcp: Option<S>,
    addr: SocketAddr,
    scanner: ResponseScanner,
    /// The first bytes of the request, until [`METHOD_SNIFF`] are known.
    method: [u8; METHOD_SNIFF],
    method_len: usize,
    /// Taken from the idle pool: an origin may have closed it meanwhile.
    reused: bool,
    /// Any byte of the response has arrived.
    answered: bool,
    /// The response broke its framing, or bytes came after its end.
    poisoned: bool,
    /// pingora probed the whole response for keep-alive: hand it back.
    released: bool,
    home: S::Home,
}

impl<S: Upstream> std::fmt::Debug for StrictSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrictSocket")
            .field("addr", &self.addr)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl<S: Upstream> StrictSocket<S> {
    pub(super) fn new(tcp: S, addr: SocketAddr, reused: bool, home: S::Home) -> StrictSocket<S> {
        StrictSocket {
            tcp: Some(tcp),
            addr,
            scanner: ResponseScanner::new(false),
            method: [0; METHOD_SNIFF],
            method_len: 0,
            reused,
            answered: false,
            poisoned: false,
            released: false,
            home,
        }
    }

    /// Notes the request's first bytes, as far as they were written.
    fn sniff(&mut self, written: &[u8]) {
        if self.method_len == METHOD_SNIFF {
            return;
        }
        let take = written.len().min(METHOD_SNIFF - self.method_len);
        self.method[self.method_len..self.method_len + take].copy_from_slice(&written[..take]);
        self.method_len += take;
        if self.method_len == METHOD_SNIFF {
            self.scanner.set_head_method(&self.method == b"HEAD ");
        }
    }

    /// An error on a connection from the idle pool before any answer: the
    /// origin closed it while it was idle, so the request may go again.
    fn stale_or(&self, error: io::Error) -> io::Error {
        if self.reused && !self.answered {
            io::Error::new(io::ErrorKind::ConnectionReset, Stale)
        } else {
            error
        }
    }

    fn tcp(&mut self) -> io::Result<Pin<&mut S>> {
        match self.tcp.as_mut() {
            Some(tcp) => Ok(Pin::new(tcp)),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

impl<S: Upstream> AsyncRead for StrictSocket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            // Nothing can be read into it: not an end of stream.
            return Poll::Ready(Ok(()));
        }
        if this.poisoned && !this.scanner.done() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Unframed("read after a framing error"),
            )));
        }
        if this.scanner.done() {
            // pingora's keep-alive probe (see the module doc): end of
            // stream, so it lets go of the socket.
            this.released = !this.poisoned
                && this.scanner.reusable()
                && this.tcp.as_mut().is_some_and(S::quiet);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = match this.tcp() {
            Ok(tcp) => tcp.poll_read(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        match read {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.stale_or(e))),
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                if got == 0 {
                    if this.reused && !this.answered {
                        return Poll::Ready(Err(
                            this.stale_or(io::Error::from(io::ErrorKind::UnexpectedEof))
                        ));
                    }
                    this.scanner.eof();
                    return Poll::Ready(Ok(()));
                }
                this.answered = true;
                match this.scanner.feed(&buf.filled()[before..]) {
                    Ok(Fed::More) => Poll::Ready(Ok(())),
                    Ok(Fed::End(end)) => {
                        if end < got {
                            // Bytes nobody asked for: not relayed, and the
                            // connection is not reused.
                            this.poisoned = true;
                            buf.set_filled(before + end);
                        }
                        Poll::Ready(Ok(()))
                    }
                    Err(bad) => {
                        this.poisoned = true;
                        buf.set_filled(before);
                        log::debug!("upstream {}: {bad}", this.addr);
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            Unframed(bad.0),
                        )))
                    }
                }
            }
        }
    }
}

impl<S: Upstream> AsyncWrite for StrictSocket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match this.tcp() {
            Ok(tcp) => tcp.poll_write(cx, buf),
            Err(e) => return Poll::Ready(Err(e)),
        };
        match written {
            Poll::Ready(Ok(n)) => {
                this.sniff(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.stale_or(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = match this.tcp() {
            Ok(tcp) => tcp.poll_write_vectored(cx, bufs),
            Err(e) => return Poll::Ready(Err(e)),
        };
        match written {
            Poll::Ready(Ok(n)) => {
                let mut left = n;
                for slice in bufs {
                    if left == 0 || this.method_len == METHOD_SNIFF {
                        break;
                    }
                    let take = left.min(slice.len());
                    this.sniff(&slice[..take]);
                    left -= take;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.stale_or(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp() {
            Ok(tcp) => tcp.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // pingora closes it: not reusable, whatever it probed before.
        this.released = false;
        match this.tcp() {
            Ok(tcp) => tcp.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<S: Upstream> VirtualSocket for StrictSocket<S> {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match (opt, &self.tcp) {
            (VirtualSockOpt::NoDelay, Some(tcp)) => tcp.nodelay(),
            // Peers are built without TCP keepalive; nothing else is asked.
            _ => Ok(()),
        }
    }
}

impl<S: Upstream> Drop for StrictSocket<S> {
    fn drop(&mut self) {
        if !self.released {
            return;
        }
        if let Some(tcp) = self.tcp.take() {
            tcp.go_home(&self.home);
        }
    }
}
