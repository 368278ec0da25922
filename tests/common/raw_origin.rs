//! Raw HTTP/1.1 origins on `127.0.0.1:0` for the conformance and review
//! suites: they answer with exactly crafted bytes. [`RawOrigin::start`]
//! reads each request (by hand, deliberately lenient, like a vulnerable
//! backend) and answers what a `fn(&Req) -> Act` says;
//! [`RawOrigin::accept`] hands each connection, as a [`Wire`], to a
//! handler that does everything itself. Aborted (with every connection) on
//! drop. Included with `#[path]` after `wire.rs`.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::wire::{find, Head, Wire, MAX_HEAD, MESSAGE};

/// How long an origin keeps an idle keep-alive connection (the proxy pools
/// it; longer than any test).
pub const ORIGIN_IDLE: Duration = Duration::from_secs(60);

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub head: Head,
    pub body: Vec<u8>,
    /// 0 for the first request on its connection, 1 for the next, …
    pub nth: usize,
}

/// What the origin does with a request.
pub enum Act {
    /// Write these bytes; keep the connection.
    Send(Vec<u8>),
    /// Write each part with its own write call; keep the connection.
    Parts(Vec<Vec<u8>>),
    /// Write these bytes, then close the connection.
    Close(Vec<u8>),
    /// Write these bytes, then echo every byte received until EOF.
    Echo(Vec<u8>),
    /// Close without answering (a backend whose idle timeout fired just
    /// as the request arrived).
    Hangup,
}

#[derive(Default)]
pub struct Seen {
    pub accepted: AtomicUsize,
    /// Every request line read, in order, recorded before its body is read.
    pub lines: Mutex<Vec<String>>,
    pub requests: Mutex<Vec<Req>>,
}

/// A raw HTTP/1.1 origin on `127.0.0.1:0`, answering with `handler`.
pub struct RawOrigin {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    pub task: tokio::task::JoinHandle<()>,
}

impl RawOrigin {
    pub async fn start(handler: fn(&Req) -> Act) -> RawOrigin {
        RawOrigin::accept(move |w, _, seen| serve(w, seen, handler)).await
    }

    /// Every accepted connection runs `handler(wire, n, seen)`, `n`
    /// counting connections from 0.
    pub async fn accept<F, Fut>(handler: F) -> RawOrigin
    where
        F: Fn(Wire, usize, Arc<Seen>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin");
        let addr = listener.local_addr().expect("origin address");
        let seen = Arc::new(Seen::default());
        let counters = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them all.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            let n = counters.accepted.fetch_add(1, Ordering::SeqCst);
                            connections.spawn(handler(Wire::new(stream), n, Arc::clone(&counters)));
                        }
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        RawOrigin { addr, seen, task }
    }

    pub fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    pub fn lines(&self) -> Vec<String> {
        self.seen.lines.lock().clone()
    }

    pub fn requests(&self) -> Vec<Req> {
        self.seen.requests.lock().clone()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(mut w: Wire, seen: Arc<Seen>, handler: fn(&Req) -> Act) {
    for nth in 0..100_000 {
        let Ok(Some(request)) = read_request(&mut w, &seen, nth).await else {
            return;
        };
        seen.requests.lock().push(request.clone());
        match handler(&request) {
            Act::Send(bytes) => {
                if w.send(&bytes).await.is_err() {
                    return;
                }
            }
            Act::Parts(parts) => {
                for part in parts {
                    if w.send(&part).await.is_err() {
                        return;
                    }
                }
            }
            Act::Close(bytes) => {
                let _ = w.send(&bytes).await;
                let _ = w.stream.shutdown().await;
                return;
            }
            Act::Echo(bytes) => {
                if w.send(&bytes).await.is_err() {
                    return;
                }
                for _ in 0..100_000 {
                    if !w.buf.is_empty() {
                        let data = std::mem::take(&mut w.buf);
                        if w.send(&data).await.is_err() {
                            return;
                        }
                    } else if !matches!(w.fill(Instant::now() + ORIGIN_IDLE).await, Ok(true)) {
                        return;
                    }
                }
                return;
            }
            Act::Hangup => return,
        }
    }
}

/// Reads one request. `None`: the connection ended (closed, idle, garbage).
///
/// Deliberately lenient, like a vulnerable backend: when a request carries
/// both Content-Length and Transfer-Encoding, Content-Length wins. A proxy
/// that forwarded both would let a smuggled request through here (the
/// smuggling test looks for it; other tests assert both never arrive).
pub async fn read_request(w: &mut Wire, seen: &Seen, nth: usize) -> Result<Option<Req>, String> {
    let until = Instant::now() + ORIGIN_IDLE;
    let mut raw = None;
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    for _ in 0..8 {
        let Some(bytes) = w.until(b"\r\n\r\n", MAX_HEAD, until).await? else {
            return Ok(None);
        };
        let start = bytes.iter().position(|b| *b != b'\r' && *b != b'\n');
        if let Some(start) = start {
            raw = Some(bytes[start..].to_vec());
            break;
        }
    }
    let Some(raw) = raw else {
        return Ok(None);
    };
    let line_end = find(&raw, b"\r\n").unwrap_or(raw.len());
    seen.lines
        .lock()
        .push(String::from_utf8_lossy(&raw[..line_end]).into_owned());
    let head = Head::parse(&raw)?;
    let mut parts = head.start.split(' ');
    let (Some(method), Some(target), Some(_version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {:?}", head.start));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let length = head.content_length()?;
    let has_body = length.is_some_and(|n| n > 0) || (length.is_none() && head.chunked());
    if has_body && head.has_token("expect", "100-continue") {
        w.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let body_until = Instant::now() + MESSAGE;
    let body = match length {
        Some(n) => w.take(n, body_until).await?,
        None if head.chunked() => w.chunked(body_until).await?.body,
        None => Vec::new(),
    };
    Ok(Some(Req {
        method,
        target,
        head,
        body,
        nth,
    }))
}

pub fn respond(status: &str, fields: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in fields {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn ok(body: &[u8]) -> Vec<u8> {
    respond("200 OK", &[("Content-Type", "text/plain")], body)
}

/// Upstream responses that can't be framed (chunked framing broken four
/// ways), by the target a test origin answers them to: the strict-upstream
/// tests send each through every path and expect a 502.
pub const UNFRAMEABLE: &[(&str, &[u8])] = &[
    (
        "/empty-size",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n\r\n",
    ),
    (
        "/bare-lf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    ),
    (
        "/bad-size",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "/trailer-cr",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
    ),
];
