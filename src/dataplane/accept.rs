//! The front door: every client connection of the proxy service starts
//! here. HTTP/2 (TLS with ALPN h2, h2c by its preface) takes pingora's own
//! path; HTTP/1.1 connections, plain or TLS (ALPN http/1.1 or none), get a
//! task of their own, the fast path first, then pingora's proxy from this
//! app's own keep-alive loop for a request the fast path does not carry.
//!
//! [`LeanKeepalive`] is the pingora app of the proxy service. An HTTP/1.1
//! connection moves to a task of its own, sized for what it needs, instead
//! of staying in pingora's accept task, which is sized for a TLS handshake. There it is served by
//! [`super::fastpath`] until a request needs pingora; from then on pingora's
//! proxy serves it one request at a time: an idle keep-alive connection
//! waits for the next request's first byte with a future of a few hundred
//! bytes, not inside the proxy's request future (about 13 KB, plus a 4 KB
//! header buffer). With 10 000 idle clients this is the difference between
//! megabytes and hundreds of megabytes.
//!
//! Every HTTP/1.x request pingora serves, plain or TLS, first passes
//! [`super::head_gate`]: its head is read whole within `max_request_head`
//! and `request_head_timeout`, which pingora itself cannot bound. An
//! HTTP/2 connection's header blocks are timed by
//! [`super::h2_watchdog`] on their way to pingora's h2 server.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::ShutdownWatch;

use super::fastpath::{self, IdlePool, IdleReaper};
use super::framing::stream::StrictStream;
use super::h2_watchdog::H2Watchdog;
use super::head_gate::{self, Arrival, Gate, Replay};
use super::head_limit::HeadLimits;
use crate::shared::Shared;

/// A pingora HTTP proxy whose idle HTTP/1.1 connections wait outside it.
pub struct LeanKeepalive<SV: ProxyHttp> {
    proxy: Arc<HttpProxy<SV>>,
    /// The routing table (and config) of every request: plain HTTP/1.1
    /// requests take [`super::fastpath`] first, unless it says otherwise.
    shared: Arc<Shared>,
    /// The fast path's idle upstream connections (this app's, not global:
    /// its reaper is [`LeanKeepalive::idle_reaper`], a service that stops
    /// with the server).
    idle: Arc<IdlePool>,
}

impl<SV: ProxyHttp> LeanKeepalive<SV> {
    pub fn new(proxy: HttpProxy<SV>, shared: Arc<Shared>) -> Self {
        LeanKeepalive {
            proxy: Arc::new(proxy),
            shared,
            idle: Arc::new(IdlePool::new()),
        }
    }

    /// The background service that closes this app's stale idle upstream
    /// connections; add it to the server next to the proxy service.
    pub fn idle_reaper(&self) -> IdleReaper {
        IdleReaper::new(Arc::clone(&self.idle))
    }

    pub fn proxy_mut(&mut self) -> Option<&mut HttpProxy<SV>> {
        Arc::get_mut(&mut self.proxy)
    }
}

impl<SV> LeanKeepalive<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    /// The head limits in force now (a reload applies from the next head).
    fn head_limits(&self) -> HeadLimits {
        HeadLimits::of(&self.shared.table_arc().config.server)
    }

    /// An HTTP/2 connection with `request_head_timeout` on its header
    /// blocks ([`H2Watchdog`]), which pingora and h2 can't time.
    fn h2_watched(&self, stream: Stream) -> Stream {
        Box::new(H2Watchdog::new(stream, self.head_limits().timeout))
    }

    /// One plain (cleartext HTTP/1.1) client connection, to its end.
    async fn serve_plain(self: Arc<Self>, mut stream: Stream, shutdown: ShutdownWatch, fast: bool) {
        let shutdown = &shutdown;
        // The fast path serves plain connections until one of their
        // requests needs pingora; that request's bytes are put back, so
        // pingora reads it as if it had just arrived.
        let mut arrival = Arrival::Idle;
        if fast && fastpath::takes(&stream) {
            let Some(plain) = fastpath::plain(stream) else {
                return;
            };
            match fastpath::serve(plain, &self.shared, &self.idle, shutdown).await {
                fastpath::Ending::Closed => return,
                fastpath::Ending::Pingora(handed, deadline) => {
                    stream = handed;
                    arrival = Arrival::Here(deadline);
                }
            }
        }
        self.serve_h1(stream, shutdown, arrival).await;
    }

    /// One TLS client connection that speaks HTTP/1.x, to its end: the
    /// fast path over the decrypted stream, then pingora's proxy from the
    /// first request the fast path does not carry.
    async fn serve_tls(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let shutdown = &shutdown;
        let (stream, arrival) =
            match fastpath::serve_tls(stream, &self.shared, &self.idle, shutdown).await {
                fastpath::Ending::Closed => return,
                fastpath::Ending::Pingora(handed, deadline) => (handed, Arrival::Here(deadline)),
            };
        Box::pin(self.serve_h1(stream, shutdown, arrival)).await;
    }

    /// An HTTP/1.x connection on pingora's proxy, request by request; plain
    /// or TLS. The client's bytes pass the framing rules first
    /// ([`StrictStream`]: a head is judged whole, a chunked body scanned),
    /// then each head is read whole through [`head_gate`] (size, deadline)
    /// before pingora sees it. Pipelined requests are served in order: a
    /// head pingora already holds is not waited for again.
    async fn serve_h1(&self, stream: Stream, shutdown: &ShutdownWatch, mut arrival: Arrival) {
        let limit = self
            .proxy
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        let limits = self.head_limits();
        let strict = StrictStream::wrap(stream, limits.max, limits.timeout);
        let mut stream = Box::new(Replay::new(strict));
        let mut persisted = None;
        let mut first = true;
        let mut served = 0;
        loop {
            let limits = self.head_limits();
            let arrived = std::mem::replace(&mut arrival, Arrival::Idle);
            let pipelined = StrictStream::heads(stream.inner()).is_some_and(|heads| heads > served);
            if !pipelined {
                match head_gate::next_head(&mut stream, &limits, arrived, shutdown).await {
                    Gate::Ready => {}
                    Gate::Closed => return,
                    Gate::Refused(answer) => {
                        log_refused(&stream, answer);
                        head_gate::refuse(&mut *stream, answer).await;
                        return;
                    }
                }
            }
            served += 1;
            let mut session = ServerSession::new_http1(stream);
            session.set_pipelining_enabled(true);
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                // pingora times the reads of a head with it; the head is
                // all here, so it never waits on one.
                session.set_keepalive(Some(limits.idle.as_secs().max(1)));
            }
            if let Some(settings) = persisted.take() {
                HttpPersistentSettings::apply_to_session(settings, &mut session);
            } else if first {
                session.set_keepalive_reuses_remaining(limit);
            }
            first = false;
            // Boxed so its (large) state exists only while a request is on.
            let Some(done) = Box::pin(self.proxy.process_new_http(session, shutdown)).await else {
                return;
            };
            let (back, settings) = done.consume();
            persisted = settings;
            // The stream comes back as the `Replay` it went in as.
            let Ok(replay) = back.into_any().downcast::<Replay>() else {
                return;
            };
            stream = replay;
        }
    }
}

/// Does this h2c listener's connection start with the HTTP/2 preface?
/// Waits for its first bytes up to `idle`; `None` if none came (or the
/// stream can't be peeked).
async fn h2_preface(stream: &mut Stream, idle: std::time::Duration) -> Option<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout(idle, stream.try_peek(&mut buf)).await {
        Ok(Ok(true)) => Some(buf == *H2_PREFACE),
        _ => None,
    }
}

/// RFC 9113 §3.4 (what pingora looks for on an h2c listener).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
impl<SV> ServerApp for LeanKeepalive<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2c = self.proxy.server_options().is_some_and(|o| o.h2c);
        // HTTP/2 (by ALPN on TLS, by its preface with h2c) is pingora's own,
        // its header list bounded by the H2 options (process::server).
        // Boxed: inline, pingora's (large) future would size every
        // connection's task, idle plain ones included.
        if stream.get_ssl_digest().is_some() {
            if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                let stream = self.h2_watched(stream);
                return Box::pin(ServerApp::process_new(&self.proxy, stream, shutdown)).await;
            }
            // HTTP/1.1 (or no ALPN): the fast path, in a task of its own
            // (pingora's is sized for the handshake, done by now).
            tokio::spawn(Arc::clone(self).serve_tls(stream, shutdown.clone()));
            return None;
        }
        let mut stream = stream;
        if h2c {
            match h2_preface(&mut stream, self.head_limits().idle).await {
                None => return None,
                Some(true) => {
                    let stream = self.h2_watched(stream);
                    return Box::pin(ServerApp::process_new(&self.proxy, stream, shutdown)).await;
                }
                Some(false) => {}
            }
        }
        // A task of its own, and pingora's ends here: pingora's
        // per-connection task is sized for its TLS handshake (kilobytes),
        // which a plain connection never needs but would carry for its
        // whole life — 10 000 idle clients made that tens of megabytes.
        // HTTP/1.1 on an h2c listener stays off the fast path.
        tokio::spawn(Arc::clone(self).serve_plain(stream, shutdown.clone(), !h2c));
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// The access-log line of a head the gate refused (over a limit), before
/// pingora saw it: pingora's `logging` hook never runs for it.
fn log_refused(stream: &Replay, answer: &[u8]) {
    let peer = stream
        .inner()
        .get_socket_digest()
        .and_then(|digest| digest.peer_addr().cloned());
    let client = super::exchange::client_ip(peer.as_ref());
    let status = super::head_limit::answer_status(answer);
    // A head the framing stream still holds (its deadline and the gate's
    // run together) is in the framing stream, not here.
    let head = match stream.refused_head() {
        [] => super::framing::stream::refused_line(Some(stream.inner())),
        head => head,
    };
    super::exchange::finish_unrouted(crate::stats::Instant::now(), || {
        crate::access_log::capture::refused_entry(client, head, status)
    });
}
