//! The HTTP/1.1 fast path and its hand-over to pingora, through the real
//! binary: which requests it carries, that a request it leaves to pingora
//! is served on the same connection, and `fast_path = false`.
//!
//! HTTP behaviour itself (framings, bodies, errors) is the same on both paths
//! and is tested in `http1_conformance.rs` and `proxy.rs`.

mod common;

use std::time::Duration;

use common::*;
use switchyard::origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WITHIN: Duration = Duration::from_secs(10);

/// Writes `request` and reads one response with a `Content-Length` body.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut bytes = Vec::new();
    let read = async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = response.parse(&bytes) {
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .expect("response has a content-length");
                if bytes.len() >= head_len + length {
                    let body = String::from_utf8_lossy(&bytes[head_len..head_len + length]);
                    return (response.code.unwrap_or(0), body.into_owned());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed mid-response: {bytes:?}");
            bytes.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("response within 10 s")
}

async fn metrics(proxy: &Proxy) -> String {
    proxy.admin_get("/metrics").await.body
}

/// Waits until `series` reads `want` (a request is counted just after its
/// response is written, so a reply can overtake its own count).
async fn expect_metric(proxy: &Proxy, series: &str, want: f64) {
    let reached = eventually(WITHIN, || async {
        metric(&metrics(proxy).await, series) == want
    })
    .await;
    assert!(
        reached,
        "{series} is {} not {want}",
        metric(&metrics(proxy).await, series)
    );
}

async fn expect_handoffs(proxy: &Proxy, want: f64) {
    expect_metric(proxy, "switchyard_pingora_handoffs_total", want).await;
}

async fn expect_2xx(proxy: &Proxy, pool: &str, want: f64) {
    let series = format!("switchyard_requests_total{{pool=\"{pool}\",class=\"2xx\"}}");
    expect_metric(proxy, &series, want).await;
}

/// A plain GET of `target`.
fn get(host: std::net::SocketAddr, target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

fn pool_body(origin: &origin::Origin) -> String {
    format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
        origin.addr()
    )
}

#[tokio::test]
async fn plain_requests_and_a_chunked_upload_stay_on_the_fast_path() {
    let blue = origin("blue").await;
    let proxy = Proxy::start(&pool_body(&blue)).await;
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let host = proxy.listen;

    for _ in 0..5 {
        let (status, body) = exchange(
            &mut client,
            &format!("GET /echo?x=1 HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 9.9.9.9\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.starts_with("GET /echo?x=1 HTTP/1.1"), "{body}");
        assert!(
            body.contains("x-forwarded-for: 9.9.9.9, 127.0.0.1\n"),
            "{body}"
        );
    }
    expect_handoffs(&proxy, 0.0).await;
    expect_2xx(&proxy, "blue", 5.0).await;

    // A chunked request body stays on the fast path too (forwarded through
    // the strict chunked scanner), and the next request on it is answered.
    let (status, body) = exchange(
        &mut client,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.starts_with("POST /echo HTTP/1.1"), "{body}");
    let (status, _) = exchange(&mut client, &get(host, "/after")).await;
    assert_eq!(status, 200);

    expect_handoffs(&proxy, 0.0).await;
    expect_2xx(&proxy, "blue", 7.0).await;
    assert_eq!(blue.control().requests(), 7);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_the_fast_path() {
    let blue = origin("blue").await;
    let proxy = Proxy::start(&pool_body(&blue)).await;
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let host = proxy.listen;
    let three: String = ["one", "two", "three"]
        .iter()
        .map(|path| get(host, &format!("/echo?{path}")))
        .collect();
    let (_, first) = exchange(&mut client, &three).await;
    let (_, second) = exchange(&mut client, "").await;
    let (_, third) = exchange(&mut client, "").await;
    assert!(first.starts_with("GET /echo?one "), "{first}");
    assert!(second.starts_with("GET /echo?two "), "{second}");
    assert!(third.starts_with("GET /echo?three "), "{third}");
    expect_handoffs(&proxy, 0.0).await;
}

#[tokio::test]
async fn a_post_with_a_length_is_carried_and_counted() {
    let blue = origin("blue").await;
    let proxy = Proxy::start(&pool_body(&blue)).await;
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let host = proxy.listen;
    // The body arrives in two writes, the second after the head went out.
    let head = format!("POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10\r\n\r\nhello");
    client.write_all(head.as_bytes()).await.expect("write");
    let (status, body) = exchange(&mut client, "world").await;
    assert_eq!(status, 200);
    assert!(body.contains("content-length: 10\n"), "{body}");
    let (status, _) = exchange(&mut client, &get(host, "/")).await;
    assert_eq!(status, 200);
    expect_handoffs(&proxy, 0.0).await;
    assert_eq!(blue.control().requests(), 2);
}

#[tokio::test]
async fn fast_path_off_sends_every_connection_through_pingora() {
    let blue = origin("blue").await;
    let proxy = Proxy::start_with("fast_path = false", &pool_body(&blue)).await;
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let host = proxy.listen;
    for _ in 0..3 {
        let (status, _) = exchange(&mut client, &get(host, "/")).await;
        assert_eq!(status, 200);
    }
    expect_handoffs(&proxy, 1.0).await;
    expect_2xx(&proxy, "blue", 3.0).await;
}

#[tokio::test]
async fn a_dead_backend_in_the_pool_costs_no_failed_request() {
    let blue = origin("blue").await;
    let dead = loopback(free_port());
    let body = format!(
        "[pools.blue]\nbackends = [\"{dead}\", \"{}\"]\n[split]\nblue = 100\n",
        blue.addr()
    );
    let proxy = Proxy::start(&body).await;
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let host = proxy.listen;
    for _ in 0..10 {
        let (status, body) = exchange(&mut client, &get(host, "/")).await;
        assert_eq!((status, body.as_str()), (200, "blue\n"));
    }
    expect_handoffs(&proxy, 0.0).await;
    expect_2xx(&proxy, "blue", 10.0).await;
}

#[tokio::test]
async fn a_refused_connect_is_a_502_and_a_drained_pool_a_503_naming_it() {
    let blue = origin("blue").await;
    let dead = loopback(free_port());
    let body = format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{dead}\"]\n\
         [split]\nblue = 0\ngreen = 100\n[health]\nenabled = false\n",
        blue.addr()
    );
    let proxy = Proxy::start(&body).await;
    let host = proxy.listen;
    let request = get(host, "/");

    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let (status, _) = exchange(&mut client, &request).await;
    assert_eq!(status, 502, "connect refused, no other backend");
    let series = "switchyard_requests_total{pool=\"green\",class=\"error\"}";
    expect_metric(&proxy, series, 1.0).await;
    expect_metric(
        &proxy,
        "switchyard_upstream_failures_total{pool=\"green\",kind=\"connect_refused\"}",
        1.0,
    )
    .await;

    // green has a share and no other backend: the drain needs --force.
    let drained = proxy.ctl(&format!("drain --force green {dead}")).await;
    assert_eq!(drained["ok"], true, "{drained}");
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    let (status, body) = exchange(&mut client, &request).await;
    assert_eq!(status, 503);
    assert_eq!(body, "switchyard: pool \"green\" has no usable backend\n");
    expect_metric(&proxy, series, 2.0).await;
    expect_handoffs(&proxy, 0.0).await;
}

#[tokio::test]
async fn fast_path_can_be_turned_off_by_a_reload() {
    let blue = origin("blue").await;
    let body = pool_body(&blue);
    let proxy = Proxy::start(&body).await;
    let host = proxy.listen;
    let request = get(host, "/");
    let mut client = TcpStream::connect(proxy.listen).await.expect("connect");
    assert_eq!(exchange(&mut client, &request).await.0, 200);
    expect_handoffs(&proxy, 0.0).await;

    let off = proxy
        .config_text(&body)
        .replacen("[server]\n", "[server]\nfast_path = false\n", 1);
    std::fs::write(proxy.config_path(), off).expect("write config");
    let answer = proxy.ctl("reload").await;
    assert!(answer.to_string().contains("revision"), "{answer}");

    // The next request, on the same connection and on a new one, is pingora's.
    assert_eq!(exchange(&mut client, &request).await.0, 200);
    expect_handoffs(&proxy, 1.0).await;
    let mut second = TcpStream::connect(proxy.listen).await.expect("connect");
    assert_eq!(exchange(&mut second, &request).await.0, 200);
    expect_handoffs(&proxy, 2.0).await;
}
