//! Review findings on the HTTP/1.1 fast path: each test failed on the fast
//! path when it was written, and passes since the fix.
//!
//! Same conventions as `http1_conformance/`, and the same harness: raw-TCP
//! origins answering with exact bytes (`common/raw_origin.rs`), a raw-TCP
//! client (`common/wire.rs`), every wait bounded. Each test runs on
//! both paths (`<test>::fast`, `<test>::pingora`) with the same assertions,
//! so the pingora variant shows what the README promises the fast path does
//! too ("the same as on pingora's path").

mod common;
#[macro_use]
#[path = "common/proxy_path.rs"]
mod proxy_path;
#[path = "common/raw_origin.rs"]
mod raw_origin;
#[path = "common/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy_path::ProxyPath;
use raw_origin::RawOrigin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Instant};
use wire::{find, read_response, Wire};

/// Bound on one response, one write, one close.
const WITHIN: Duration = Duration::from_secs(10);

/// The proxy with one pool of `backends`; health checks, passive ejection
/// and the guard off. `extra` goes into `[server]`.
async fn proxy_to(backends: &[SocketAddr], path: ProxyPath, extra: &str) -> Proxy {
    let list = backends
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let fast = path.server_line();
    Proxy::start_with(
        &format!(
            "connect_timeout = \"1s\"\nread_timeout = \"5s\"\nwrite_timeout = \"5s\"\n{fast}{extra}"
        ),
        &format!(
            "[pools.app]\nbackends = [{list}]\n[split]\napp = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nenabled = false\n"
        ),
    )
    .await
}

/// One GET on a fresh connection: status and body.
async fn get(addr: SocketAddr, target: &str) -> Result<(u16, Vec<u8>), String> {
    let mut w = Wire::try_connect(addr).await?;
    let request = format!("GET {target} HTTP/1.1\r\nHost: review.test\r\n\r\n");
    w.send(request.as_bytes()).await?;
    read_response(&mut w, false)
        .await
        .map(|response| (response.status, response.body))
}

// ---------------------------------------------------------------------------
// An origin that answers before it has read the request body
// ---------------------------------------------------------------------------

// A final response sent while the upload is still on its way (413, 401, a
// redirect) must reach the client. The fast path used to send the whole
// body before reading: with an origin that stops reading, it blocked until
// `write_timeout`, answered 502 instead of the 413, and counted a failure
// against a healthy backend.
both_paths!(an_early_final_response_during_an_upload_reaches_the_client);
async fn an_early_final_response_during_an_upload_reaches_the_client(path: ProxyPath) {
    let origin = RawOrigin::accept(|mut w, _, _| async move {
        if w.head(WITHIN).await.is_none() {
            return;
        }
        let _ = w
            .stream
            .write_all(
                b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\
                  Connection: close\r\n\r\ntoo large",
            )
            .await;
        // Holds the connection without reading the body (as a server does
        // while it lingers before closing).
        tokio::time::sleep(Duration::from_secs(12)).await;
    })
    .await;
    let proxy = proxy_to(&[origin.addr], path, "").await;

    let client = TcpStream::connect(proxy.listen).await.expect("connect");
    let (mut read_half, mut write_half) = client.into_split();
    const UPLOAD: usize = 64 * 1024 * 1024;
    let uploader = tokio::spawn(async move {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: review.test\r\nContent-Length: {UPLOAD}\r\n\r\n"
        );
        if write_half.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let piece = vec![b'u'; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(12);
        for _ in 0..UPLOAD / piece.len() {
            match timeout_at(until, write_half.write_all(&piece)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });

    // Read the response head that comes back, bounded.
    let until = Instant::now() + WITHIN;
    let mut got = Vec::new();
    while find(&got, b"\r\n\r\n").is_none() {
        let mut chunk = [0u8; 4096];
        match timeout_at(until, read_half.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    uploader.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{path:?}: the origin's early 413 must reach the client, got {text:?}"
    );
}

// ---------------------------------------------------------------------------
// Idle upstream connections
// ---------------------------------------------------------------------------

// Idle upstream keep-alive connections are closed after `idle_timeout`
// even when no request comes (the fast path used to look at them only when
// a request took from or gave to the pool).
both_paths!(an_idle_upstream_connection_is_closed_after_idle_timeout);
async fn an_idle_upstream_connection_is_closed_after_idle_timeout(path: ProxyPath) {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<Duration>();
    let origin = RawOrigin::accept(move |mut w, _, _| {
        let closed_tx = closed_tx.clone();
        async move {
            if w.head(WITHIN).await.is_none() {
                return;
            }
            let _ = w
                .stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            let answered = std::time::Instant::now();
            // Keep-alive: wait (long) for the next request or the proxy's close.
            let mut chunk = [0u8; 1024];
            if let Ok(Ok(0)) = timeout(Duration::from_secs(30), w.stream.read(&mut chunk)).await {
                let _ = closed_tx.send(answered.elapsed());
            }
        }
    })
    .await;
    let proxy = proxy_to(&[origin.addr], path, "idle_timeout = \"1s\"\n").await;

    let (status, body) = get(proxy.listen, "/once").await.expect("response");
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));

    // idle_timeout is 1 s: allow 6.
    let closed = timeout(Duration::from_secs(6), closed_rx.recv()).await;
    assert!(
        matches!(closed, Ok(Some(_))),
        "{path:?}: the idle upstream connection was still open 6 s after its 1 s idle_timeout"
    );
}

// ---------------------------------------------------------------------------
// Retry of a request whose reused connection was dead
// ---------------------------------------------------------------------------

// A GET whose pooled connections are all dead gets a fresh connection
// after the first dead one (the fast path used to take the next idle one,
// and after two stale retries answered 502).
both_paths!(a_get_on_several_dead_pooled_connections_gets_a_fresh_one);
async fn a_get_on_several_dead_pooled_connections_gets_a_fresh_one(path: ProxyPath) {
    const POOLED: usize = 4;
    // Each origin connection answers its first request, once POOLED
    // connections have a request (so the proxy opens POOLED of them), and
    // closes without answering any later one.
    let waiting = Arc::new(AtomicUsize::new(0));
    let origin = RawOrigin::accept(move |mut w, _, _| {
        let waiting = Arc::clone(&waiting);
        async move {
            if w.head(WITHIN).await.is_none() {
                return;
            }
            waiting.fetch_add(1, Ordering::SeqCst);
            let until = std::time::Instant::now() + WITHIN;
            while waiting.load(Ordering::SeqCst) < POOLED && std::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if w.stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
                .await
                .is_err()
            {
                return;
            }
            // The next request on this connection: hang up unanswered.
            let _ = w.head(Duration::from_secs(30)).await;
        }
    })
    .await;
    let proxy = proxy_to(&[origin.addr], path, "").await;

    // POOLED concurrent requests: POOLED upstream connections, all pooled
    // afterwards (threads = 1: one thread's list).
    let mut first = tokio::task::JoinSet::new();
    for i in 0..POOLED {
        let listen = proxy.listen;
        first.spawn(async move { get(listen, &format!("/warm/{i}")).await });
    }
    while let Some(done) = first.join_next().await {
        let (status, body) = done.expect("task").expect("warm-up response");
        assert_eq!((status, body.as_slice()), (200, b"fresh".as_slice()));
    }

    // Every pooled connection is now dead on reuse; a GET must still work.
    let result = get(proxy.listen, "/after").await;
    assert_eq!(
        result.as_ref().map(|(s, b)| (*s, b.as_slice())),
        Ok((200, b"fresh".as_slice())),
        "{path:?}: a GET was answered {result:?} although a fresh connection would serve it"
    );
}

// ---------------------------------------------------------------------------
// Response heads with many fields
// ---------------------------------------------------------------------------

// A response with more than 64 header lines (many Set-Cookie), well under
// 16 KiB, is forwarded (the fast path used to parse response heads into 64
// slots and answer 502).
both_paths!(a_response_with_many_header_lines_is_forwarded);
async fn a_response_with_many_header_lines_is_forwarded(path: ProxyPath) {
    let origin = RawOrigin::accept(|mut w, _, _| async move {
        while w.head(WITHIN).await.is_some() {
            let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..80 {
                response.extend_from_slice(format!("Set-Cookie: c{i}=v; Path=/\r\n").as_bytes());
            }
            response.extend_from_slice(b"Content-Length: 4\r\n\r\nmany");
            if w.stream.write_all(&response).await.is_err() {
                return;
            }
        }
    })
    .await;
    let proxy = proxy_to(&[origin.addr], path, "").await;
    let result = get(proxy.listen, "/cookies").await;
    assert_eq!(
        result.as_ref().map(|(s, b)| (*s, b.as_slice())),
        Ok((200, b"many".as_slice())),
        "{path:?}: {result:?}"
    );
}
