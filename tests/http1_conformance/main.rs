//! HTTP/1.1 conformance of the proxy path, checked byte for byte.
//!
//! Origins here are raw TCP servers that parse each request by hand and
//! answer with exactly crafted bytes (`common/raw_origin.rs`); the client
//! is a raw TCP connection that writes exact request bytes and parses every
//! response by hand (`common/wire.rs`). So framing is tested as it is on
//! the wire, not as a client library would smooth it over. Every read has a
//! deadline and every loop a bound; nothing sleeps to wait for readiness.
//!
//! This file holds the origin's answers (`app`) and the proxy setup; the
//! tests are in one file per chapter: `framing` (response framing, request
//! bodies, pipelining), `connections` (close and HTTP/1.0, the origin
//! closing, upstream keep-alive and stale pooled connections, an origin
//! dying, dead backends), `malformed` (malformed and hostile requests,
//! smuggling, oversized heads), `headers` (fidelity, hop-by-hop fields),
//! `upgrades` (101 and 1xx).
//!
//! Every test runs twice (see `both_paths!`): `<test>::fast` with the
//! HTTP/1.1 fast path on (the default), which serves plain requests itself
//! and hands anything else to pingora, and `<test>::pingora` with
//! `fast_path = false`, where pingora's HTTP/1 path serves everything. Both
//! make the same assertions. Where pingora does something other than the
//! strictest reading of RFC 9112 but still safe, the assertion accepts both
//! and a comment says what pingora does ("pingora:"). Each test ends by
//! checking the handoff counter: a test of plain requests must not have
//! touched pingora on the fast path.

#[path = "../common/mod.rs"]
mod common;
#[macro_use]
#[path = "../common/proxy_path.rs"]
mod proxy_path;
#[path = "../common/raw_origin.rs"]
mod raw_origin;
#[path = "../common/wire.rs"]
mod wire;

mod connections;
mod framing;
mod headers;
mod malformed;
mod upgrades;

use std::net::SocketAddr;

use common::*;
use proxy_path::ProxyPath;
use raw_origin::*;
use wire::*;

const POOL_HEADER: &str = "x-switchyard-pool";
/// The size of the large bodies.
const BIG: usize = 5 * 1024 * 1024 + 17;
const UPLOAD: usize = 2 * 1024 * 1024 + 5;

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: conformance.test\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: conformance.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// `body` as a chunked request in chunks of `size`.
fn post_chunked(path: &str, body: &[u8], size: usize) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: conformance.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(size) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// What `/echo` answers for a request body.
fn echo_of(method: &str, target: &str, body: &[u8]) -> String {
    format!(
        "{method} {target} len={} fnv={:016x}\n",
        body.len(),
        fnv(body)
    )
}

const CL_BODY: &[u8] = b"hello, content-length\n";
/// The body `/chunked` sends, in three chunks with extensions and a trailer.
const CHUNKED_BODY: &[u8] = b"hello, chunky\n";
const CLOSE_BODY: &[u8] = b"close-delimited body: everything up to the FIN\n";
const HEAD_LENGTH: usize = 1234;

/// The origin every test uses; what it answers depends on the path.
fn app(req: &Req) -> Act {
    let path = req.target.split('?').next().unwrap_or_default();
    match path {
        "/cl" => Act::Send(ok(CL_BODY)),
        "/chunked" => Act::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
              7;lang=en\r\nhello, \r\n\
              6;name=\"quoted;value\";flag\r\nchunky\r\n\
              1\r\n\n\r\n\
              0\r\nX-Checksum: c0ffee\r\n\r\n"
                .to_vec(),
        ),
        "/close" => {
            let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
            bytes.extend_from_slice(CLOSE_BODY);
            Act::Close(bytes)
        }
        "/head" => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {HEAD_LENGTH}\r\n\r\n");
            let mut bytes = head.into_bytes();
            if req.method != "HEAD" {
                bytes.extend_from_slice(&pattern(HEAD_LENGTH));
            }
            Act::Send(bytes)
        }
        "/204" => Act::Send(b"HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n".to_vec()),
        "/304" => Act::Send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec()),
        "/big-cl" => Act::Send(ok(&pattern(BIG))),
        "/big-chunked" => {
            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for chunk in pattern(BIG).chunks(64 * 1024 - 3) {
                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
            Act::Send(bytes)
        }
        "/echo" => Act::Send(ok(echo_of(&req.method, &req.target, &req.body).as_bytes())),
        // The request head exactly as the origin received it.
        "/headers" => Act::Send(ok(req.head.raw.as_bytes())),
        "/origin-close" => Act::Close(respond(
            "200 OK",
            &[("Connection", "close")],
            b"last one on this connection\n",
        )),
        // A keep-alive response, and then the origin closes anyway (as a
        // backend with a short idle timeout does).
        "/stale" => Act::Close(ok(b"fresh\n")),
        // Keep-alive, but a request arriving on the kept connection finds
        // it closed (the classic keep-alive race, made deterministic).
        "/hangup-on-reuse" if req.nth > 0 => Act::Hangup,
        "/hangup-on-reuse" => Act::Send(ok(format!("{} fresh\n", req.method).as_bytes())),
        "/die" => Act::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789".to_vec()),
        "/ws" => Act::Echo(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec(),
        ),
        "/early" => Act::Parts(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec(),
            ok(b"after the hints\n"),
        ]),
        "/hop" => Act::Send(respond(
            "200 OK",
            &[
                ("Connection", "X-Resp-Hop"),
                ("X-Resp-Hop", "hop"),
                ("Keep-Alive", "timeout=5"),
                ("X-Resp-End", "end"),
            ],
            b"hop\n",
        )),
        "/cookies" => Act::Send(respond(
            "200 OK",
            &[
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; HttpOnly"),
            ],
            b"two cookies\n",
        )),
        _ => Act::Send(ok(format!("{}\n", req.target).as_bytes())),
    }
}

impl ProxyPath {
    /// Checks, from the admin metrics, that the test really ran on this
    /// path. `switchyard_pingora_handoffs_total` counts client connections
    /// the fast path handed to pingora; with `fast_path = false`, every
    /// connection is.
    ///
    /// On the fast path a test of plain requests must have handed over
    /// none. The counter moves before pingora reads the handed-over request
    /// (unlike the request counters, which move after the response), so once
    /// the test has its responses, one read is final. Otherwise (the pingora
    /// variant, or requests the fast path leaves to pingora by design) at
    /// least one connection went to pingora.
    async fn assert_taken(self, proxy: &Proxy, sent: Sent) {
        const SERIES: &str = "switchyard_pingora_handoffs_total";
        let handoffs = || async { metric(&proxy.admin_get("/metrics").await.body, SERIES) };
        if (self, sent) == (ProxyPath::Fast, Sent::Plain) {
            assert_eq!(
                handoffs().await,
                0.0,
                "a plain request was handed to pingora"
            );
        } else {
            let handed = eventually(MESSAGE, || async { handoffs().await >= 1.0 }).await;
            assert!(handed, "{self:?}, {sent:?}: no connection reached pingora");
        }
    }
}

/// What a test sends, for [`ProxyPath::assert_taken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Only plain requests (GET, HEAD, POST with a Content-Length or a
    /// chunked body, `Expect: 100-continue`; keep-alive or close) and
    /// requests the framing rules refuse: the fast path carries or answers
    /// every one.
    Plain,
    /// Also requests the fast path leaves to pingora by design (Upgrade,
    /// HTTP/1.0, a Connection header naming fields, absolute-form targets,
    /// oversized heads).
    SomeForPingora,
}

/// The proxy with one pool, `app`, of `backends`, on `path`; health
/// checks, passive ejection and the guard off, so every request goes where
/// the test says.
async fn proxy_to(backends: &[SocketAddr], path: ProxyPath) -> Proxy {
    let list = backends
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Proxy::start_with(
        &format!(
            "pool_header = \"{POOL_HEADER}\"\nconnect_timeout = \"1s\"\n\
             read_timeout = \"5s\"\nwrite_timeout = \"5s\"\n{}",
            path.server_line()
        ),
        &format!(
            "[pools.app]\nbackends = [{list}]\n[split]\napp = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nenabled = false\n"
        ),
    )
    .await
}

async fn origin_and_proxy(path: ProxyPath) -> (RawOrigin, Proxy) {
    let origin = RawOrigin::start(app).await;
    let proxy = proxy_to(&[origin.addr], path).await;
    (origin, proxy)
}

/// A plain GET on a fresh connection must be served (the proxy is alive).
async fn still_serving(proxy: &Proxy) {
    let mut w = Wire::connect(proxy.listen).await;
    let response = exchange(&mut w, &get("/cl")).await;
    assert_eq!(response.status, 200, "proxy still serving: {response:?}");
    assert_eq!(response.body, CL_BODY);
}
