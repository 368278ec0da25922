//! The HTTP/1.1 fast path: keep-alive requests, plain or over TLS, proxied
//! without pingora's HTTP layer.
//!
//! Profiles of the pingora path (README, "Performance") put most of its cost
//! per request in building `http` header maps twice, copying them, and the
//! per-request futures and timers around them. This path keeps pingora's
//! listeners, process model, signals and upgrade, but for a plain HTTP/1.1
//! request it parses the head in place (`httparse`), writes the upstream head
//! straight from the client's bytes, and forwards bodies byte for byte over
//! its own per-thread upstream keep-alive connections.
//!
//! It only takes what it fully understands (see [`head::parse_request`]);
//! anything else is handed, bytes unread, to pingora's proxy, which either
//! serves it or answers the error. Routing, statistics, passive health and
//! retries are the same as on the pingora path: both call the data plane's
//! `exchange` policy.
//!
//! The boundary: it takes an HTTP/1.1 connection (plain, or TLS after its
//! handshake) from the accept
//! app and serves it request by request; a request it does
//! not carry is handed back as [`Ending::Pingora`] with its bytes put back
//! in the stream, and pingora serves the connection from then on.
//!
//! By job: [`client`] (the plain and TLS client streams, and how each is
//! handed to pingora), [`connection`] (the keep-alive loop and its waits, parsing,
//! answering failures), [`forward`] (attempts, request head and body up),
//! [`relay`] (response head and body down), [`scratch`] (per-request
//! buffers), [`io`] (deadline-bound reads and writes), [`head`] (HTTP/1.1
//! heads), [`deadline`], [`upstream`] (connections and the idle pool). The
//! framing rules and the chunked scanner are [`crate::dataplane::framing`]'s,
//! shared with pingora's path.

mod client;
mod connection;
mod deadline;
mod forward;
mod head;
mod io;
mod relay;
mod scratch;
mod upstream;

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;

use super::exchange::client_ip;
use crate::shared::Shared;
use client::Client;
pub use connection::Ending;
use connection::{Connection, Serving};
use deadline::Deadline;
use head::ClientAddr;
pub use upstream::{IdlePool, IdleReaper};

/// Is this stream one the fast path can serve (plain TCP, not TLS)?
pub fn takes(stream: &Stream) -> bool {
    stream.as_any().is::<L4Stream>() && stream.get_ssl_digest().is_none()
}

/// The concrete plain stream, if it is one.
pub fn plain(stream: Stream) -> Option<Box<L4Stream>> {
    stream.into_any().downcast::<L4Stream>().ok()
}

/// Serves one plain client connection until it closes, or until a request
/// needs pingora. Upstream connections are reused from `idle`.
/// (Not an `async fn`: a wrapper future of its own would add to every
/// connection's task.)
pub fn serve<'a>(
    client: Box<L4Stream>,
    shared: &'a Shared,
    idle: &'a IdlePool,
    shutdown: &'a ShutdownWatch,
) -> impl std::future::Future<Output = Ending> + Send + 'a {
    let client_ip = peer_ip(&*client);
    serve_client(client, client_ip, shared, idle, shutdown)
}

/// Serves one TLS client connection (its handshake done, ALPN http/1.1 or
/// none) like [`serve`]: the same routing, limits, statistics and log, over
/// the decrypted stream. The client's address is read once here, not per
/// request (pingora's TLS stream makes a new socket digest, a
/// `getpeername`, each time it is asked).
pub fn serve_tls<'a>(
    client: Stream,
    shared: &'a Shared,
    idle: &'a IdlePool,
    shutdown: &'a ShutdownWatch,
) -> impl std::future::Future<Output = Ending> + Send + 'a {
    let client_ip = peer_ip(&*client);
    serve_client(client, client_ip, shared, idle, shutdown)
}

/// The client's IP address, asked of its socket once per connection.
fn peer_ip<S: GetSocketDigest + ?Sized>(client: &S) -> Option<std::net::IpAddr> {
    let digest = client.get_socket_digest();
    client_ip(digest.as_ref().and_then(|d| d.peer_addr()))
}

async fn serve_client<C: Client>(
    client: C,
    client_ip: Option<std::net::IpAddr>,
    shared: &Shared,
    idle: &IdlePool,
    shutdown: &ShutdownWatch,
) -> Ending {
    let connection = Connection {
        client,
        client_addr: ClientAddr::new(client_ip),
        buffered: 0,
        deadline: Deadline::new(),
        idle: shared.table_arc().config.server.idle_timeout,
    };
    let serving = Serving {
        shared,
        idle,
        shutdown,
    };
    connection::keep_alive(connection, serving).await
}

/// The fast path's parsers, for the fuzz targets in `fuzz/` only: not an
/// API, nothing in the proxy imports them from here.
#[doc(hidden)]
pub mod parsers {
    pub use super::head::{
        parse_request, parse_response, BadResponse, ClientAddr, Framing, Parsed, Request, Response,
        ResponseContext, MAX_HEADERS, MAX_RESPONSE_HEADERS,
    };
    pub use crate::dataplane::framing::chunked::{BadChunk, ChunkedScanner};
}

#[cfg(test)]
mod tests {
    /// Every plain client connection's task holds this future for its whole
    /// life, idle or not: it must stay small (10 000 idle clients).
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let stream: super::L4Stream = tcp.into();
        let table = crate::routing::RoutingTable::from_config_text(
            "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[split]\nblue = 100\n",
        );
        let (shared, _publisher) = crate::shared::Shared::new(table);
        let (_shutdown, watch) = tokio::sync::watch::channel(false);
        let idle = super::IdlePool::new();
        let serve = super::serve(Box::new(stream), &shared, &idle, &watch);
        let size = std::mem::size_of_val(&serve);
        eprintln!("fastpath::serve future: {size} bytes");
        // 2 KiB until the head deadline (bounded heads) and the framing
        // rules' state joined it; brought back down is the idle-memory
        // work of the edge-performance issue.
        assert!(size <= 2304, "fastpath::serve future is {size} bytes");
    }
}
