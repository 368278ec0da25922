//! Strict upstream HTTP/1.1 response framing on pingora's path.
//!
//! pingora parses upstream response bodies itself, more leniently than
//! RFC 9112 (an empty chunk-size line is its last chunk, bare-LF chunk
//! lines pass), and has no hook between its upstream socket and that
//! parser. So for plaintext HTTP/1.1 peers, [`StrictConnect`] is the
//! peer's `custom_l4` connect: it hands pingora a virtual socket
//! ([`socket`]) that runs [`crate::dataplane::framing::response`] over
//! every byte read from the origin. A response that can't be framed
//! becomes a read error: a 502 when its head has not reached the client,
//! a cut when it has — never relayed verbatim — and that connection is
//! closed, never reused.
//!
//! Because pingora can't pool virtual sockets, idle connections live in a
//! [`IdlePool`] of this module's (the fast path's pool type), and a stale
//! one (closed by the origin while idle) is reported as [`Stale`] so that
//! [`crate::dataplane::pingora`] retries the request as pingora would for
//! its own reused connections; a framing error ([`Unframed`]) is never
//! retried.
//!
//! HTTP/1.1-over-TLS peers get the same socket over a TLS stream whose
//! handshake this module does ([`tls`]). Not covered: HTTP/2 upstreams
//! (h2 frames), and `protocol = "auto"` TLS peers (ALPN may pick h2, so
//! pingora does their handshake).

mod socket;
pub mod tls;

use std::io;
use std::net::SocketAddr as InetAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::VirtualSocketStream;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};
use tokio::net::TcpStream;

use crate::dataplane::fastpath::{IdlePool, IdleReaper};
use crate::shared::Shared;
use socket::{Home, StrictSocket};

/// The origin closed an idle pooled connection before answering on it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("idle upstream connection was closed by the origin")]
pub struct Stale;

/// The origin's response can't be framed (RFC 9112).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upstream response can't be framed: {0}")]
pub struct Unframed(pub &'static str);

/// The `custom_l4` connect of plaintext HTTP/1.1 peers.
pub struct StrictConnect {
    shared: Arc<Shared>,
    idle: Arc<IdlePool>,
    tls_idle: Arc<tls::TlsIdlePool>,
    /// The reaper of `idle` starts with the first connection (inside the
    /// proxy's runtime) and stops when this is dropped.
    reaper: AtomicBool,
    stop_reaper: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for StrictConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StrictConnect")
    }
}

impl StrictConnect {
    pub fn new(shared: Arc<Shared>) -> Arc<StrictConnect> {
        Arc::new(StrictConnect {
            shared,
            idle: Arc::new(IdlePool::new()),
            tls_idle: Arc::new(tls::TlsIdlePool::default()),
            reaper: AtomicBool::new(false),
            stop_reaper: tokio::sync::watch::channel(false).0,
        })
    }

    /// Does this peer's traffic go through the strict socket? Plaintext
    /// HTTP/1.1 only (a plaintext peer that allows h2 speaks HTTP/1.1 unless
    /// it requires h2: pingora's rule).
    pub fn applies_to(peer: &HttpPeer) -> bool {
        !peer.tls() && peer.options.alpn.get_min_http_version() == 1
    }

    fn start_reaper(&self) {
        if self.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let reaper = IdleReaper::new(Arc::clone(&self.idle));
        let stop = self.stop_reaper.subscribe();
        tokio::spawn(async move { reaper.start(stop).await });
    }
}

#[async_trait]
impl L4Connect for StrictConnect {
    async fn connect(&self, addr: &SocketAddr) -> pingora::Result<Stream> {
        let SocketAddr::Inet(inet) = addr else {
            return Error::e_explain(ErrorType::ConnectError, "strict upstream: not an IP peer");
        };
        self.start_reaper();
        let table = self.shared.table_arc();
        let server = &table.config.server;
        let home = Home {
            idle: Arc::clone(&self.idle),
            addr: *inet,
            capacity: server.upstream_keepalive_pool,
            max_idle: server.idle_timeout,
        };
        let (tcp, reused) = match self.idle.take_idle(*inet) {
            Some(tcp) => (tcp, true),
            None => (connect(*inet, server.connect_timeout).await?, false),
        };
        let socket = StrictSocket::new(tcp, *inet, reused, home);
        Ok(Stream::from(VirtualSocketStream::new(Box::new(socket))))
    }
}

/// A new connection within `timeout` (pingora times only its own L4
/// connects), its failure typed as pingora's would be.
async fn connect(addr: InetAddr, timeout: std::time::Duration) -> pingora::Result<TcpStream> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let kind = match e.kind() {
                io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
                _ => ErrorType::ConnectError,
            };
            return Err(Error::because(
                kind,
                format!("Fail to connect to {addr}"),
                e,
            ));
        }
        Err(_) => {
            return Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("timeout {timeout:?} connecting to server {addr}"),
            )
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        return Err(Error::because(ErrorType::ConnectError, "TCP_NODELAY", e));
    }
    Ok(stream)
}

/// What a pingora error on the way says about the strict socket under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A pooled connection the origin had closed: safe to retry.
    Stale,
    /// The response broke its framing: never retried.
    Unframed,
    Other,
}

/// Looks through `error`'s causes (pingora wraps the socket's I/O error,
/// sometimes in another pingora error) for one of this module's.
pub fn cause(error: &Error) -> Cause {
    let mut next: Option<&(dyn std::error::Error + Send + Sync + 'static)> = error.cause.as_deref();
    // Bounded: pingora nests a few levels at most.
    for _ in 0..8 {
        let Some(current) = next else {
            return Cause::Other;
        };
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return match io.get_ref() {
                Some(inner) if inner.is::<Stale>() => Cause::Stale,
                Some(inner) if inner.is::<Unframed>() => Cause::Unframed,
                _ => Cause::Other,
            };
        }
        // A nested pingora error is boxed twice (`Box<Error>` as the cause).
        next = match (
            current.downcast_ref::<Box<Error>>(),
            current.downcast_ref::<Error>(),
        ) {
            (Some(wrapped), _) => wrapped.cause.as_deref(),
            (None, Some(wrapped)) => wrapped.cause.as_deref(),
            (None, None) => None,
        };
    }
    Cause::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_found_through_pingora_wrapping() {
        let io = io::Error::new(io::ErrorKind::ConnectionReset, Stale);
        let inner = Error::because(ErrorType::ReadError, "while reading response headers", io);
        let outer = Error::because(ErrorType::ReadError, "Peer: x", inner).into_up();
        assert_eq!(cause(&outer), Cause::Stale);
        let io = io::Error::new(io::ErrorKind::InvalidData, Unframed("x"));
        let direct = Error::because(ErrorType::ReadError, "while reading body", io);
        assert_eq!(cause(&direct), Cause::Unframed);
        let plain = Error::because(
            ErrorType::ReadError,
            "x",
            io::Error::from(io::ErrorKind::BrokenPipe),
        );
        assert_eq!(cause(&plain), Cause::Other);
    }
}
