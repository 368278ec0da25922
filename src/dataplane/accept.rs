//! The front door: every client connection of the proxy service starts
//! here. TLS and h2c connections take pingora's own path; plain ones get a
//! task of their own, the fast path first, and HTTP/1.1 connections that
//! wait cheaply between requests.
//!
//! [`LeanKeepalive`] is the pingora app of the proxy service. A plain
//! (cleartext) connection moves to a task of its own, sized for what a
//! plain connection needs, instead of staying in pingora's accept task,
//! which is sized for a TLS handshake. There it is served by
//! [`super::fastpath`] until a request needs pingora; from then on pingora's
//! proxy serves it one request at a time: an idle keep-alive connection
//! waits for the next request's first byte with a future of a few hundred
//! bytes, not inside the proxy's request future (about 13 KB, plus a 4 KB
//! header buffer). TLS and h2c connections take pingora's own path,
//! unchanged. With 10 000 idle clients this is the difference between
//! megabytes and hundreds of megabytes.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::ShutdownWatch;

use super::fastpath::{self, IdlePool, IdleReaper, CLIENT_KEEPALIVE};
use super::framing::stream::StrictStream;
use crate::shared::Shared;

/// A pingora HTTP proxy whose idle HTTP/1.1 connections wait outside it.
pub struct LeanKeepalive<SV: ProxyHttp> {
    proxy: Arc<HttpProxy<SV>>,
    /// Set: plain HTTP/1.1 requests take [`super::fastpath`] first.
    fast_path: Option<Arc<Shared>>,
    /// The fast path's idle upstream connections (this app's, not global:
    /// its reaper is [`LeanKeepalive::idle_reaper`], a service that stops
    /// with the server).
    idle: Arc<IdlePool>,
}

impl<SV: ProxyHttp> LeanKeepalive<SV> {
    pub fn new(proxy: HttpProxy<SV>) -> Self {
        LeanKeepalive {
            proxy: Arc::new(proxy),
            fast_path: None,
            idle: Arc::new(IdlePool::new()),
        }
    }

    /// Serves plain HTTP/1.1 connections on [`super::fastpath`] first.
    pub fn with_fast_path(mut self, shared: Arc<Shared>) -> Self {
        self.fast_path = Some(shared);
        self
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

/// Waits until the client sends a byte (true), or closes, idles out or the
/// server shuts down (false). The byte stays in the stream for the parser.
async fn next_request_arrives(stream: &mut Stream, shutdown: &ShutdownWatch) -> bool {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return false;
    }
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(CLIENT_KEEPALIVE, stream.try_peek(&mut first)) => {
            matches!(peeked, Ok(Ok(true)))
        }
        _ = shutdown.changed() => false,
    }
}

impl<SV> LeanKeepalive<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    /// One plain (cleartext HTTP/1.1) client connection, to its end.
    async fn serve_plain(self: Arc<Self>, mut stream: Stream, shutdown: ShutdownWatch) {
        let shutdown = &shutdown;
        // The fast path serves plain connections until one of their
        // requests needs pingora; that request's bytes are put back, so
        // pingora reads it as if it had just arrived.
        let mut arrived = false;
        if let Some(shared) = &self.fast_path {
            if fastpath::takes(&stream) {
                let Some(plain) = fastpath::plain(stream) else {
                    return;
                };
                match fastpath::serve(plain, shared, &self.idle, shutdown).await {
                    fastpath::Ending::Closed => return,
                    fastpath::Ending::Pingora(handed) => {
                        stream = handed;
                        arrived = true;
                    }
                }
            }
        }
        let limit = self
            .proxy
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        // The framing rules run on pingora's path too (and pipelined
        // requests are served in order, as on the fast path).
        let mut stream = StrictStream::wrap(stream);
        let mut persisted = None;
        let mut first = true;
        let mut served = 0;
        loop {
            let pipelined = StrictStream::heads(&stream).is_some_and(|heads| heads > served);
            if !std::mem::take(&mut arrived)
                && !pipelined
                && !next_request_arrives(&mut stream, shutdown).await
            {
                return;
            }
            served += 1;
            let mut session = ServerSession::new_http1(stream);
            session.set_pipelining_enabled(true);
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(CLIENT_KEEPALIVE.as_secs()));
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
            (stream, persisted) = done.consume();
        }
    }
}

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
        // TLS (HTTP/2 by ALPN, and streams that can't be peeked) and h2c
        // take pingora's own path.
        if stream.get_ssl_digest().is_some() || h2c {
            // HTTP/1.1 over TLS gets the framing rules too (h2 has its own
            // framing, and h2c is never wrapped).
            let stream = if !h2c && !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                StrictStream::wrap(stream)
            } else {
                stream
            };
            // Boxed: inline, pingora's (large) future would size every
            // connection's task, idle plain ones included.
            return Box::pin(ServerApp::process_new(&self.proxy, stream, shutdown)).await;
        }
        // A task of its own, and pingora's ends here: pingora's
        // per-connection task is sized for its TLS handshake (kilobytes),
        // which a plain connection never needs but would carry for its
        // whole life — 10 000 idle clients made that tens of megabytes.
        tokio::spawn(Arc::clone(self).serve_plain(stream, shutdown.clone()));
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
