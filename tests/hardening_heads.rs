//! Bounded request heads (issue 15, item 1), through the real binary: a
//! head over `server.max_request_head` gets 431 (400 when the request line
//! alone is over it) and a close, a head not complete within
//! `server.request_head_timeout` of its first byte gets 408 and a close, an
//! idle keep-alive connection is closed by `idle_timeout` instead, and
//! nothing of a refused head reaches the origin. Each case runs three ways:
//! the fast path, pingora's path (`fast_path = false`) and a TLS listener.
//! The origin is a raw one that records every request it receives.

mod common;
#[path = "common/raw_origin.rs"]
mod raw_origin;
#[path = "common/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tls::{certificate, client_config, tls_connect};
use common::*;
use raw_origin::{Act, RawOrigin};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use wire::find;

/// Bound on one response, one write, one close.
const WITHIN: Duration = Duration::from_secs(10);
const KIB: usize = 1024;

/// Which of the proxy's doors a test goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A plain listener with the fast path on.
    Fast,
    /// A plain listener with `fast_path = false`: pingora serves it all.
    Pingora,
    /// A TLS listener (HTTP/1.1 by ALPN).
    Tls,
}

/// Defines `$case::fast`, `$case::pingora` and `$case::tls`, each running
/// `async fn $case(way: Way)` with the same assertions.
macro_rules! every_way {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fast() {
                super::$case(super::Way::Fast).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pingora() {
                super::$case(super::Way::Pingora).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                super::$case(super::Way::Tls).await;
            }
        }
    };
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The proxy in front of one recording origin, reached `way`.
struct Setup {
    proxy: Proxy,
    origin: RawOrigin,
    way: Way,
    /// The TLS listener and the certificate it serves (for `Way::Tls`).
    tls: Option<(SocketAddr, Vec<u8>)>,
    _certs: TestDir,
}

impl Setup {
    /// `server` goes into `[server]`.
    async fn start(way: Way, server: &str) -> Setup {
        let origin = RawOrigin::start(|_| Act::Send(raw_origin::ok(b"ok"))).await;
        let certs = TestDir::new("heads-tls");
        let mut body = String::new();
        let mut tls = None;
        if way == Way::Tls {
            let (cert, key, der) = certificate(&["localhost"]);
            std::fs::write(certs.path().join("cert.pem"), cert).expect("write cert");
            std::fs::write(certs.path().join("key.pem"), key).expect("write key");
            let addr = loopback(free_port());
            body.push_str(&format!(
                "[[server.tls]]\nlisten = \"{addr}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
                d = certs.path().display()
            ));
            tls = Some((addr, der));
        }
        body.push_str(&format!(
            "[pools.app]\nbackends = [\"{}\"]\n[split]\napp = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nenabled = false\n",
            origin.addr
        ));
        let fast = if way == Way::Pingora {
            "fast_path = false\n"
        } else {
            "fast_path = true\n"
        };
        let proxy = Proxy::start_with(&format!("{fast}{server}"), &body).await;
        Setup {
            proxy,
            origin,
            way,
            tls,
            _certs: certs,
        }
    }

    async fn connect(&self) -> Client {
        let io: Box<dyn Io> = match &self.tls {
            Some((addr, der)) => {
                let config = client_config(&[der], &[b"http/1.1"]);
                Box::new(tls_connect(*addr, "localhost", config).await)
            }
            None => {
                let tcp = tokio::time::timeout(WITHIN, TcpStream::connect(self.proxy.listen))
                    .await
                    .expect("connect in time")
                    .expect("connect");
                let _ = tcp.set_nodelay(true);
                Box::new(tcp)
            }
        };
        let (read, write) = tokio::io::split(io);
        Client {
            reader: Reader {
                read,
                buf: Vec::new(),
            },
            write,
        }
    }

    /// What the origin received, as request lines.
    fn origin_saw(&self) -> Vec<String> {
        self.origin.lines()
    }
}

/// One client connection, plain or TLS.
struct Client {
    reader: Reader,
    write: WriteHalf<Box<dyn Io>>,
}

/// The reading half of a [`Client`], with its buffer.
struct Reader {
    read: ReadHalf<Box<dyn Io>>,
    buf: Vec<u8>,
}

/// A response as the client read it.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Client {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(WITHIN, self.write.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("write timed out".to_string()),
        }
    }

    async fn response(&mut self, within: Duration) -> Result<Response, String> {
        self.reader.response(within).await
    }

    async fn closed(&mut self, within: Duration) -> Result<(), String> {
        self.reader.closed(within).await
    }
}

impl Reader {
    /// One read into the buffer, by `until`: false at EOF (or a reset).
    async fn fill(&mut self, until: tokio::time::Instant) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, self.read.read(&mut chunk)).await {
            Err(_) => Err(format!(
                "timed out ({} bytes buffered: {})",
                self.buf.len(),
                wire::lossy(&self.buf)
            )),
            Ok(Ok(0)) | Ok(Err(_)) => Ok(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    /// One response with a Content-Length body, within `within`.
    async fn response(&mut self, within: Duration) -> Result<Response, String> {
        let until = tokio::time::Instant::now() + within;
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > 64 * KIB || !self.fill(until).await? {
                return Err(format!("no response head: {}", wire::lossy(&self.buf)));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            if !self.fill(until).await? {
                return Err("closed inside the body".to_string());
            }
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok(Response { status, head, body })
    }

    /// Waits up to `within` for the proxy to close (EOF or reset); bytes
    /// instead are an error.
    async fn closed(&mut self, within: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + within;
        if !self.buf.is_empty() {
            return Err(format!("unexpected bytes: {}", wire::lossy(&self.buf)));
        }
        match self.fill(until).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(format!("unexpected bytes: {}", wire::lossy(&self.buf))),
            Err(_) => Err(format!("still open after {within:?}")),
        }
    }
}

/// A GET whose head is exactly `len` bytes (request line, Host, one
/// padding field, blank line), or without its blank line if `!complete`.
fn head_of(len: usize, complete: bool) -> Vec<u8> {
    let start = b"GET /heads HTTP/1.1\r\nHost: heads.test\r\nX-Pad: ".to_vec();
    let end: &[u8] = if complete { b"\r\n\r\n" } else { b"\r\n" };
    let pad = len - start.len() - end.len();
    let mut head = start;
    head.extend(std::iter::repeat_n(b'p', pad));
    head.extend_from_slice(end);
    head
}

/// A refusal: `status`, `Connection: close`, then the proxy closes; the
/// origin saw nothing.
async fn assert_refused(setup: &Setup, client: &mut Client, status: u16) {
    let way = setup.way;
    let response = client
        .response(WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{way:?}: no {status}: {e}"));
    assert_eq!(response.status, status, "{way:?}: {}", response.head);
    assert!(
        response.head.contains("\r\nConnection: close\r\n"),
        "{way:?}: {}",
        response.head
    );
    client
        .closed(WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{way:?}: after {status}: {e}"));
    assert_eq!(setup.origin_saw(), Vec::<String>::new(), "{way:?}");
}

// A head of exactly max_request_head (default 32 KiB) is served; one byte
// more is 431, and none of it reaches the origin.
every_way!(one_byte_over_the_limit_is_431_and_a_close);
async fn one_byte_over_the_limit_is_431_and_a_close(way: Way) {
    let setup = Setup::start(way, "").await;
    let mut client = setup.connect().await;
    client.send(&head_of(32 * KIB + 1, true)).await.ok();
    assert_refused(&setup, &mut client, 431).await;

    let mut client = setup.connect().await;
    client.send(&head_of(32 * KIB, true)).await.expect("send");
    let response = client.response(WITHIN).await.expect("a response");
    assert_eq!(response.status, 200, "{way:?}: {}", response.head);
    assert_eq!(setup.origin_saw().len(), 1, "{way:?}");
}

// A request line that alone is longer than the limit is a 400.
every_way!(a_request_line_over_the_limit_is_400);
async fn a_request_line_over_the_limit_is_400(way: Way) {
    let setup = Setup::start(way, "").await;
    let mut client = setup.connect().await;
    let mut request = b"GET /".to_vec();
    request.extend(std::iter::repeat_n(b'a', 33 * KIB));
    request.extend_from_slice(b" HTTP/1.1\r\nHost: heads.test\r\n\r\n");
    client.send(&request).await.ok();
    assert_refused(&setup, &mut client, 400).await;
}

// A head bigger than the fast path's 16 KiB buffer and under the limit is
// served whole, by whichever path takes it, and the connection stays
// usable.
every_way!(a_head_between_16_kib_and_the_limit_is_served);
async fn a_head_between_16_kib_and_the_limit_is_served(way: Way) {
    let setup = Setup::start(way, "").await;
    let mut client = setup.connect().await;
    let head = head_of(30 * KIB, true);
    client.send(&head).await.expect("send");
    let response = client.response(WITHIN).await.expect("a response");
    assert_eq!(response.status, 200, "{way:?}: {}", response.head);
    assert_eq!(response.body, b"ok");
    let seen = setup.origin.requests();
    assert_eq!(seen.len(), 1, "{way:?}");
    let pad = head.len() - b"GET /heads HTTP/1.1\r\nHost: heads.test\r\nX-Pad: \r\n\r\n".len();
    assert_eq!(
        seen[0].head.get("x-pad").map(str::len),
        Some(pad),
        "{way:?}: the padding field arrived whole"
    );
    client.send(&head_of(200, true)).await.expect("send");
    let again = client.response(WITHIN).await.expect("a second response");
    assert_eq!(again.status, 200, "{way:?}");
}

// A configured limit is honoured: 4 KiB.
every_way!(a_small_configured_limit_is_honoured);
async fn a_small_configured_limit_is_honoured(way: Way) {
    let setup = Setup::start(way, "max_request_head = \"4KiB\"\n").await;
    let mut client = setup.connect().await;
    client.send(&head_of(4 * KIB, true)).await.expect("send");
    let response = client.response(WITHIN).await.expect("a response");
    assert_eq!(response.status, 200, "{way:?}: {}", response.head);
    assert_eq!(setup.origin_saw().len(), 1);

    for len in [4 * KIB + 1, 6 * KIB] {
        let mut client = setup.connect().await;
        client.send(&head_of(len, true)).await.ok();
        let response = client.response(WITHIN).await.expect("a response");
        assert_eq!(response.status, 431, "{way:?}, {len} bytes");
        client.closed(WITHIN).await.expect("closed");
    }
    assert_eq!(
        setup.origin_saw().len(),
        1,
        "{way:?}: nothing more forwarded"
    );
}

// A head dripped one byte every 200 ms gets 408 at request_head_timeout
// (1 s) from its first byte, although bytes keep arriving; the connection
// is closed and the origin saw nothing.
every_way!(a_dripped_head_gets_408_at_the_deadline);
async fn a_dripped_head_gets_408_at_the_deadline(way: Way) {
    let setup = Setup::start(way, "request_head_timeout = \"1s\"\n").await;
    let Client {
        mut reader,
        mut write,
    } = setup.connect().await;
    let started = Instant::now();
    // At most 50 bytes (10 s): the writer stops at the first failed write.
    let drip = tokio::spawn(async move {
        for byte in b"GET /drip HTTP/1.1\r\nHost: heads.test\r\nX-Drip: 0123456789" {
            if write.write_all(&[*byte]).await.is_err() || write.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let response = reader.response(Duration::from_secs(5)).await;
    let took = started.elapsed();
    let response = response.unwrap_or_else(|e| panic!("{way:?}: no 408 within 5 s: {e}"));
    assert_eq!(response.status, 408, "{way:?}: {}", response.head);
    eprintln!("{way:?}: 408 after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(3),
        "{way:?}: 408 after {took:?}, the deadline is 1 s"
    );
    reader
        .closed(Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("{way:?}: after 408: {e}"));
    drip.abort();
    assert_eq!(setup.origin_saw(), Vec::<String>::new(), "{way:?}");
}

// An idle keep-alive connection waiting for its next head is governed by
// idle_timeout (3 s), not by request_head_timeout (1 s): it is still open
// after 1.5 s idle and serves a request, then closes about 3 s after its
// last response.
every_way!(an_idle_keep_alive_connection_is_closed_by_idle_timeout);
async fn an_idle_keep_alive_connection_is_closed_by_idle_timeout(way: Way) {
    let setup = Setup::start(
        way,
        "request_head_timeout = \"1s\"\nidle_timeout = \"3s\"\n",
    )
    .await;
    let mut client = setup.connect().await;
    client.send(&head_of(200, true)).await.expect("send");
    assert_eq!(client.response(WITHIN).await.expect("first").status, 200);
    // Idle for longer than the head deadline: nothing may arrive (or close).
    let quiet = client.closed(Duration::from_millis(1500)).await;
    assert!(
        quiet.as_ref().is_err_and(|e| e.starts_with("still open")),
        "{way:?}: after 1.5 s idle: {quiet:?}"
    );
    client.send(&head_of(200, true)).await.expect("send");
    assert_eq!(client.response(WITHIN).await.expect("second").status, 200);
    let idle_from = Instant::now();
    client
        .closed(Duration::from_secs(8))
        .await
        .unwrap_or_else(|e| panic!("{way:?}: {e}"));
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2500) && idle <= Duration::from_secs(6),
        "{way:?}: closed after {idle:?} idle, idle_timeout is 3 s"
    );
    assert_eq!(setup.origin_saw().len(), 2, "{way:?}");
}

/// The proxy's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The proxy's RSS once it stops growing: the highest of samples 250 ms
/// apart, until two in a row are within 512 kB (at most 5 s).
async fn settled_rss_kib(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    let mut highest = last;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        highest = highest.max(now);
        if now.abs_diff(last) < 512 {
            break;
        }
        last = now;
    }
    highest
}

// The attack of issue 15: 300 connections each sending an unterminated
// 1 MB head. Before: +289 MB of RSS on the fast path, +308 MB on pingora's.
// Now each connection holds at most max_request_head (32 KiB) until its
// 431: at most 16 MiB more in all.
every_way!(three_hundred_unterminated_1_mb_heads_add_at_most_16_mib);
async fn three_hundred_unterminated_1_mb_heads_add_at_most_16_mib(way: Way) {
    const CLIENTS: usize = 300;
    const HEAD: usize = 1_000_000;
    let setup = Setup::start(way, "").await;
    let at_start = rss_kib(setup.proxy.pid());
    // Lazy start-up allocations happen before the baseline.
    let mut warm = setup.connect().await;
    warm.send(&head_of(20 * KIB, true)).await.expect("send");
    assert_eq!(warm.response(WITHIN).await.expect("warm").status, 200);
    // Keep-alive clients that each had one request served: what their
    // connections hold (TLS record buffers, the first-use allocations of
    // each path) is in the baseline; what the heads add is measured.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = setup.connect().await;
        client.send(&head_of(200, true)).await.expect("send");
        assert_eq!(client.response(WITHIN).await.expect("first").status, 200);
        clients.push(client);
    }
    let pid = setup.proxy.pid();
    let before = rss_kib(pid);
    let started = Instant::now();
    let head = std::sync::Arc::new(head_of(HEAD, false));
    let mut senders = tokio::task::JoinSet::new();
    for mut client in clients {
        let head = std::sync::Arc::clone(&head);
        senders.spawn(async move {
            // Until the whole megabyte is written or the proxy stops taking it.
            for chunk in head.chunks(64 * KIB) {
                if client.send(chunk).await.is_err() {
                    break;
                }
            }
            let answered = client.response(Duration::from_secs(5)).await.ok();
            (client, answered.map(|r| r.status))
        });
    }
    let mut open = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(done) = tokio::time::timeout(Duration::from_secs(40), senders.join_next())
        .await
        .expect("the senders finish in time")
    {
        let (client, status) = done.expect("sender task");
        *statuses.entry(status).or_insert(0) += 1;
        open.push(client);
    }
    // Measured with every client socket still open, once the proxy has
    // taken in what it will (the kernel buffers the rest for a while).
    let after = settled_rss_kib(pid).await;
    let added = after.saturating_sub(before);
    eprintln!(
        "{way:?}: VmRSS {at_start} kB at start, {before} kB with {CLIENTS} keep-alive connections, {after} kB after {CLIENTS} x {HEAD} B heads \
         (+{added} kB) in {:?}; answers: {statuses:?}",
        started.elapsed()
    );
    assert!(
        added <= 16 * 1024,
        "{way:?}: RSS grew by {added} kB ({before} -> {after})"
    );
    drop(open);
    // And the proxy is intact.
    let mut client = setup.connect().await;
    client.send(&head_of(200, true)).await.expect("send");
    assert_eq!(client.response(WITHIN).await.expect("after").status, 200);
    assert_eq!(
        setup.origin_saw().len(),
        CLIENTS + 2,
        "{way:?}: nothing of the heads"
    );
}

/// The SETTINGS a TLS listener sends an HTTP/2 client: (identifier, value).
async fn h2_settings(setup: &Setup) -> Vec<(u16, u32)> {
    let (addr, der) = setup.tls.as_ref().expect("a TLS listener");
    let mut stream = tls_connect(*addr, "localhost", client_config(&[der], &[b"h2"])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Client preface and an empty SETTINGS frame.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.expect("preface");
    let mut frame = [0u8; 9];
    tokio::time::timeout(WITHIN, stream.read_exact(&mut frame))
        .await
        .expect("SETTINGS in time")
        .expect("SETTINGS frame");
    assert_eq!(frame[3], 4, "the server's first frame is SETTINGS");
    let len = usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
    let mut payload = vec![0u8; len];
    tokio::time::timeout(WITHIN, stream.read_exact(&mut payload))
        .await
        .expect("SETTINGS payload in time")
        .expect("SETTINGS payload");
    payload
        .chunks(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect()
}

/// SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2).
const MAX_HEADER_LIST_SIZE: u16 = 0x6;

// HTTP/2 announces max_request_head as SETTINGS_MAX_HEADER_LIST_SIZE,
// the default and a configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_announces_max_request_head_as_its_header_list_size() {
    for (server, expected) in [("", 32 * 1024), ("max_request_head = 4096\n", 4096)] {
        let setup = Setup::start(Way::Tls, server).await;
        let settings = h2_settings(&setup).await;
        assert!(
            settings.contains(&(MAX_HEADER_LIST_SIZE, expected)),
            "{server:?}: {settings:?}"
        );
    }
}

// HTTP/1.1 on an h2c listener (which pingora serves whole) passes the same
// gate: over the limit, 431; a dripped head, 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_on_an_h2c_listener_is_bounded_too() {
    let setup = Setup::start(Way::Pingora, "h2c = true\nrequest_head_timeout = \"1s\"\n").await;
    let mut client = setup.connect().await;
    client.send(&head_of(32 * KIB + 1, true)).await.ok();
    assert_refused(&setup, &mut client, 431).await;

    let mut client = setup.connect().await;
    let started = Instant::now();
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: heads.test\r\n")
        .await
        .expect("send");
    let response = client
        .response(Duration::from_secs(5))
        .await
        .expect("a 408");
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let mut client = setup.connect().await;
    client.send(&head_of(200, true)).await.expect("send");
    assert_eq!(client.response(WITHIN).await.expect("served").status, 200);
}

// A reload applies a new request_head_timeout from the next head on, and
// keeps max_request_head (HTTP/2 announced it at start) until a restart,
// saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_request_head_timeout_and_keeps_max_request_head() {
    let setup = Setup::start(Way::Fast, "request_head_timeout = \"30s\"\n").await;
    let text = std::fs::read_to_string(setup.proxy.config_path()).expect("config");
    let edited = text.replace(
        "request_head_timeout = \"30s\"\n",
        "request_head_timeout = \"1s\"\nmax_request_head = \"4KiB\"\n",
    );
    assert_ne!(text, edited);
    let temp = setup.proxy.config_path().with_extension("tmp");
    std::fs::write(&temp, edited).expect("write config");
    std::fs::rename(&temp, setup.proxy.config_path()).expect("rename config");
    // Revision 2 is the reload, in force once the status shows it.
    assert!(
        eventually(WITHIN, || async {
            setup.proxy.ctl("status").await["revision"] == 2
        })
        .await,
        "no reload seen:\n{}",
        setup.proxy.log()
    );
    let warned = "a change of server.max_request_head takes effect at the next restart";
    assert!(setup.proxy.log().contains(warned), "{}", setup.proxy.log());

    let mut client = setup.connect().await;
    client.send(&head_of(6 * KIB, true)).await.expect("send");
    let kept = client.response(WITHIN).await.expect("a response");
    assert_eq!(kept.status, 200, "max_request_head is still 32 KiB");

    let mut client = setup.connect().await;
    let started = Instant::now();
    client
        .send(b"GET /slow HTTP/1.1\r\nHost: heads.test\r\n")
        .await
        .expect("send");
    let response = client
        .response(Duration::from_secs(5))
        .await
        .expect("a 408");
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
