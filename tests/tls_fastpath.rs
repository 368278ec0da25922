//! HTTP/1.1 over TLS on the fast path (real binary, real rustls client,
//! loopback): keep-alive requests with ALPN http/1.1 and with no ALPN are
//! served without pingora (its hand-over count stays 0), with the same
//! upstream head as on a plain listener (X-Forwarded-For, x-request-id
//! while the access log is on) and their access log lines;
//! a request the fast path does not carry is handed to pingora on the same
//! TLS connection, its bytes intact, and served.

mod common;

use std::time::Duration;

use common::tls::{certificate, client_config, tls_connect, TlsStream};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WITHIN: Duration = Duration::from_secs(10);

/// One response read off `stream`: (status, head, body). Framed by
/// Content-Length (every answer here has one); bounded by [`WITHIN`].
async fn response(stream: &mut TlsStream) -> (u16, String, String) {
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded: at most 64 KiB of response.
        while got.len() < 64 * 1024 {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole response: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if got.len() >= end + 4 + length {
                let status = head[9..12].parse().expect("status");
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return (status, head, body);
            }
        }
        panic!("response too long");
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("response in time")
}

async fn handoffs(proxy: &Proxy) -> f64 {
    metric(
        &proxy.admin_get("/metrics").await.body,
        "switchyard_pingora_handoffs_total",
    )
}

#[tokio::test]
async fn tls_http1_keep_alive_takes_the_fast_path_and_hands_over_what_it_does_not_carry() {
    let blue = origin("blue").await;
    let certs = TestDir::new("tls-fast");
    let (cert, key, der) = certificate(&["localhost"]);
    std::fs::write(certs.path().join("cert.pem"), cert).expect("write cert");
    std::fs::write(certs.path().join("key.pem"), key).expect("write key");
    let tls_addr = loopback(free_port());
    let log = certs.path().join("access.log");
    let proxy = Proxy::start_with(
        &format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
            d = certs.path().display()
        ),
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
             [access_log]\npath = \"{}\"\nformat = \"json\"\n",
            blue.addr(),
            log.display()
        ),
    )
    .await;

    for alpn in [&[&b"http/1.1"[..]][..], &[][..]] {
        let mut stream = tls_connect(tls_addr, "localhost", client_config(&[&der], alpn)).await;
        // Keep-alive: several requests on one connection, one of them two
        // requests in one write (pipelined).
        for _ in 0..3 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .expect("write");
            let (status, _, body) = response(&mut stream).await;
            assert_eq!((status, body.as_str()), (200, "blue\n"), "ALPN {alpn:?}");
        }
        stream
            .write_all(
                b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            )
            .await
            .expect("write");
        let (status, _, echo) = response(&mut stream).await;
        assert_eq!(status, 200);
        assert!(echo.starts_with("GET /echo HTTP/1.1"), "{echo}");
        assert!(echo.contains("x-forwarded-for: 127.0.0.1"), "{echo}");
        assert!(echo.contains("x-request-id: "), "{echo}");
        let (status, _, body) = response(&mut stream).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "blue\n"),
            "the pipelined one"
        );
    }
    assert_eq!(
        handoffs(&proxy).await,
        0.0,
        "TLS HTTP/1.1 stayed on the fast path"
    );
    // 2 connections x 5 requests, each with its line (the writer drains
    // within ~100 ms).
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(WITHIN, || async { lines().lines().count() >= 10 }).await,
        "10 access log lines: {}",
        lines()
    );
    let echo_line: serde_json::Value = lines()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["target"] == "/echo")
        .expect("the /echo request's line");
    assert_eq!(echo_line["protocol"], "HTTP/1.1");
    assert_eq!(echo_line["status"], 200);
    assert_eq!(echo_line["pool"], "blue");

    // HTTP/1.0 is pingora's: handed over on the same TLS connection after
    // a fast-path request, and answered.
    let mut stream = tls_connect(
        tls_addr,
        "localhost",
        client_config(&[&der], &[b"http/1.1"]),
    )
    .await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(response(&mut stream).await.0, 200);
    stream
        .write_all(b"GET /echo HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let (status, _, echo) = response(&mut stream).await;
    assert_eq!(status, 200);
    assert!(echo.starts_with("GET /echo"), "{echo}");
    assert_eq!(handoffs(&proxy).await, 1.0, "one connection handed over");
    drop(proxy);
}
