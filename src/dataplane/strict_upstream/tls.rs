//! Strict framing for HTTP/1.1-over-TLS peers: switchyard does the TLS
//! handshake inside the `custom_l4` connect (with the pool's rustls client
//! settings, [`crate::tls::upstream::probe_client_config`]: its CA bundle
//! or the system's, `verify`, ALPN `http/1.1`), so that the strict socket
//! scans the decrypted response, and pingora is handed a plaintext peer
//! over that stream (it must not do TLS again).
//!
//! Idle TLS connections are kept here, keyed by address, client settings
//! and server name: two pools may reach one address with different names
//! or CAs, and a connection verified for one is not the other's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use std::{io, pin::Pin};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::VirtualSocketStream;
use pingora::tls::{ClientConfig, ClientTlsStream, ServerName, TlsConnector};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::socket::{StrictSocket, Upstream};
use super::StrictConnect;

type Tls = ClientTlsStream<TcpStream>;

/// Which connections are interchangeable.
#[derive(Clone)]
pub(super) struct TlsKey {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsKey {
    fn same(&self, other: &TlsKey) -> bool {
        self.addr == other.addr
            && Arc::ptr_eq(&self.config, &other.config)
            && self.name == other.name
    }
}

struct IdleTls {
    key: TlsKey,
    expires: Instant,
    stream: Tls,
}

/// Idle TLS connections of strict sockets. Bounded by the keep-alive pool
/// size; stale ones are dropped when met (on take, and oldest first past
/// capacity). A contended lock is skipped, never waited on.
#[derive(Default)]
pub(super) struct TlsIdlePool {
    idle: Mutex<VecDeque<IdleTls>>,
}

impl TlsIdlePool {
    fn take(&self, key: &TlsKey) -> Option<Tls> {
        let mut idle = self.idle.try_lock()?;
        let now = Instant::now();
        // Bounded by the pool's length; each turn removes one.
        while let Some(index) = idle.iter().rposition(|c| c.key.same(key)) {
            let Some(mut candidate) = idle.remove(index) else {
                break;
            };
            if now < candidate.expires && candidate.stream.quiet() {
                return Some(candidate.stream);
            }
        }
        None
    }

    fn put(&self, key: TlsKey, stream: Tls, capacity: usize, max_idle: Duration) {
        if capacity == 0 {
            return;
        }
        let Some(mut idle) = self.idle.try_lock() else {
            return;
        };
        let now = Instant::now();
        idle.retain(|c| now < c.expires);
        while idle.len() >= capacity {
            idle.pop_front();
        }
        idle.push_back(IdleTls {
            key,
            expires: now + max_idle,
            stream,
        });
    }
}

pub(super) struct TlsHome {
    idle: Arc<TlsIdlePool>,
    key: TlsKey,
    capacity: usize,
    max_idle: Duration,
}

impl Upstream for Tls {
    type Home = TlsHome;

    /// A read that can't wait: pending means nothing arrived (not even a
    /// close_notify). With a no-op waker; a real read registers its own.
    fn quiet(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(self).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    fn nodelay(&self) -> io::Result<()> {
        self.get_ref().0.set_nodelay(true)
    }

    fn go_home(self, home: &TlsHome) {
        home.idle
            .put(home.key.clone(), self, home.capacity, home.max_idle);
    }
}

/// The `custom_l4` connect of one request to an HTTP/1.1-over-TLS peer.
pub struct StrictTlsConnect {
    strict: Arc<StrictConnect>,
    key: TlsKey,
}

impl std::fmt::Debug for StrictTlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StrictTlsConnect")
    }
}

/// Does this TLS peer's traffic go through a strict TLS socket? HTTP/1.1
/// only (`protocol = "h1"`): an `auto` pool's ALPN may pick h2, which
/// pingora speaks and frames itself.
pub fn applies_to(peer: &HttpPeer) -> bool {
    peer.tls() && peer.options.alpn.get_max_http_version() == 1
}

/// A plaintext peer with the same address and options as `peer`, whose
/// connect does TLS with `config` and `peer`'s SNI.
pub fn plaintext_peer(
    strict: &Arc<StrictConnect>,
    peer: &HttpPeer,
    config: &Arc<ClientConfig>,
) -> pingora::Result<HttpPeer> {
    let Some(addr) = peer.address().as_inet().copied() else {
        return Error::e_explain(ErrorType::ConnectError, "strict upstream: not an IP peer");
    };
    let name = match ServerName::try_from(peer.sni().to_string()) {
        Ok(name) => name,
        // No name given: the address is the name (as pingora does).
        Err(_) => ServerName::from(addr.ip()),
    };
    let mut plain = HttpPeer::new(addr, false, String::new());
    plain.options = peer.options.clone();
    plain.options.custom_l4 = Some(Arc::new(StrictTlsConnect {
        strict: Arc::clone(strict),
        key: TlsKey {
            addr,
            config: Arc::clone(config),
            name,
        },
    }));
    Ok(plain)
}

#[async_trait]
impl L4Connect for StrictTlsConnect {
    async fn connect(&self, _addr: &PeerAddr) -> pingora::Result<Stream> {
        let strict = &self.strict;
        let table = strict.shared.table_arc();
        let server = &table.config.server;
        let home = TlsHome {
            idle: Arc::clone(&strict.tls_idle),
            key: self.key.clone(),
            capacity: server.upstream_keepalive_pool,
            max_idle: server.idle_timeout,
        };
        let addr = self.key.addr;
        let (tls, reused) = match strict.tls_idle.take(&self.key) {
            Some(tls) => (tls, true),
            None => (handshake(&self.key, server.connect_timeout).await?, false),
        };
        let socket = StrictSocket::new(tls, addr, reused, home);
        Ok(Stream::from(VirtualSocketStream::new(Box::new(socket))))
    }
}

/// A new TCP connection and TLS handshake, each within `timeout`.
async fn handshake(key: &TlsKey, timeout: Duration) -> pingora::Result<Tls> {
    let tcp = super::connect(key.addr, timeout).await?;
    let connector = TlsConnector::from(Arc::clone(&key.config));
    match tokio::time::timeout(timeout, connector.connect(key.name.clone(), tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(Error::because(
            ErrorType::TLSHandshakeFailure,
            format!("TLS handshake with {}", key.addr),
            e,
        )),
        Err(_) => Error::e_explain(
            ErrorType::TLSHandshakeTimedout,
            format!("timeout {timeout:?} in the TLS handshake with {}", key.addr),
        ),
    }
}
