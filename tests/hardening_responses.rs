//! Strict upstream response framing on pingora's path (issue 15, item 2),
//! through the real binary: an origin response that can't be framed (an
//! empty chunk-size line, bare-LF chunk lines, a non-hex size at the start
//! of the body, a bare CR in a trailer) is a 502 when none of it reached
//! the client, a clean close when its head already did — never relayed —
//! and the upstream connection it came on is never used again, while
//! well-framed responses keep theirs. Run over a `fast_path = false`
//! listener (HTTP/1.1) and an h2c listener (HTTP/2 to the client): both are
//! pingora's path. The origin is a raw one that counts its connections.

mod common;
#[path = "common/raw_origin.rs"]
mod raw_origin;
#[path = "common/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use raw_origin::UNFRAMEABLE as BAD;
use raw_origin::{Act, RawOrigin, Req};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wire::{find, Wire};

/// Bound on one exchange.
const WITHIN: Duration = Duration::from_secs(10);

/// Answers each target; keeps every connection open (a proxy that reused
/// a poisoned one would be answered on it).
fn answer(req: &Req) -> Act {
    if let Some((_, bytes)) = BAD.iter().find(|(target, _)| *target == req.target) {
        return Act::Send(bytes.to_vec());
    }
    match req.target.as_str() {
        // The second request on a connection finds it closed (an origin
        // whose idle timeout fired just then).
        "/once" if req.nth == 1 => Act::Hangup,
        _ => Act::Send(raw_origin::ok(b"good")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A plain listener with `fast_path = false`: HTTP/1.1 on pingora.
    Http1,
    /// An h2c listener, HTTP/2 with prior knowledge.
    H2c,
}

async fn setup(way: Way, origin: &RawOrigin) -> Proxy {
    let server = match way {
        Way::Http1 => "fast_path = false\n",
        Way::H2c => "h2c = true\n",
    };
    Proxy::start_with(
        server,
        &format!(
            "[pools.app]\nbackends = [\"{}\"]\n[split]\napp = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nenabled = false\n",
            origin.addr
        ),
    )
    .await
}

/// One GET on a new client connection: the status and body, or an error
/// (a cut response, a reset stream).
async fn fetch(way: Way, proxy: &Proxy, path: &str) -> Result<(u16, String), String> {
    match way {
        Way::Http1 => get(proxy.listen, path, &[])
            .await
            .map(|r| (r.status, r.body)),
        Way::H2c => {
            let exchange = async {
                let tcp = TcpStream::connect(proxy.listen)
                    .await
                    .map_err(|e| e.to_string())?;
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .map_err(|e| format!("h2c handshake: {e}"))?;
                tokio::spawn(connection);
                let request = http::Request::get(format!("http://{}{path}", proxy.listen))
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            };
            tokio::time::timeout(WITHIN, exchange)
                .await
                .map_err(|_| "timed out".to_string())?
        }
    }
}

/// The origin's record of the latest request for `target`.
fn last(origin: &RawOrigin, target: &str) -> Req {
    origin
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.target == target)
        .unwrap_or_else(|| panic!("the origin never saw {target}"))
}

async fn malformed_responses(way: Way) {
    let origin = RawOrigin::start(answer).await;
    let proxy = setup(way, &origin).await;
    for (target, _) in BAD {
        let answered = fetch(way, &proxy, target).await;
        assert_eq!(
            answered.as_ref().map(|(status, _)| *status),
            Ok(502),
            "{way:?} {target}: {answered:?}\n{}",
            proxy.log()
        );
        let asked = origin
            .requests()
            .iter()
            .filter(|r| r.target == *target)
            .count();
        assert_eq!(asked, 1, "{way:?} {target}: a framing error is not retried");

        // The connection that response came on is never used again ...
        let before = origin.accepted();
        let good = fetch(way, &proxy, "/good").await;
        assert_eq!(
            good,
            Ok((200, "good".to_string())),
            "{way:?} after {target}"
        );
        let fresh = last(&origin, "/good");
        assert_eq!(
            fresh.nth, 0,
            "{way:?} after {target}: /good on a fresh connection"
        );
        assert_eq!(origin.accepted(), before + 1, "{way:?} after {target}");

        // ... while a well-framed response keeps its connection.
        let again = fetch(way, &proxy, "/good").await;
        assert_eq!(
            again,
            Ok((200, "good".to_string())),
            "{way:?} after {target}"
        );
        assert_eq!(
            last(&origin, "/good").nth,
            1,
            "{way:?}: a good connection is reused"
        );
        assert_eq!(origin.accepted(), before + 1, "{way:?} after {target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_are_502_and_never_reused_http1() {
    malformed_responses(Way::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_are_502_and_never_reused_h2c() {
    malformed_responses(Way::H2c).await;
}

/// A pooled connection the origin closed while it was idle is not the
/// origin's answer: the GET goes again, on a new connection.
async fn stale_pooled_connection(way: Way) {
    let origin = RawOrigin::start(answer).await;
    let proxy = setup(way, &origin).await;
    assert_eq!(
        fetch(way, &proxy, "/once").await,
        Ok((200, "good".to_string()))
    );
    assert_eq!(
        fetch(way, &proxy, "/once").await,
        Ok((200, "good".to_string())),
        "{way:?}\n{}",
        proxy.log()
    );
    let seen: Vec<usize> = origin
        .requests()
        .iter()
        .filter(|r| r.target == "/once")
        .map(|r| r.nth)
        .collect();
    assert_eq!(
        seen,
        [0, 1, 0],
        "{way:?}: reused, hung up on, retried fresh"
    );
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_is_retried_http1() {
    stale_pooled_connection(Way::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_is_retried_h2c() {
    stale_pooled_connection(Way::H2c).await;
}

/// A chunk size that breaks after the head and a first chunk went to the
/// client: the client's connection closes, without the bad bytes and
/// without a last chunk (the body is visibly cut), and the next request
/// gets a new upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framing_error_after_the_head_is_a_clean_close() {
    let sent_head = Arc::new(tokio::sync::Notify::new());
    let go_on = Arc::clone(&sent_head);
    let origin = RawOrigin::accept(move |mut w, _n, seen| {
        let go_on = Arc::clone(&go_on);
        async move {
            for nth in 0..16 {
                let Ok(Some(req)) = raw_origin::read_request(&mut w, &seen, nth).await else {
                    return;
                };
                seen.requests.lock().push(req.clone());
                if req.target == "/late" {
                    let head =
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
                    if w.send(head).await.is_err() {
                        return;
                    }
                    // Only once the client holds the head and the first chunk.
                    go_on.notified().await;
                    let _ = w.send(b"zz\r\nworld\r\n0\r\n\r\n").await;
                } else if w.send(&raw_origin::ok(b"good")).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let proxy = setup(Way::Http1, &origin).await;

    let mut client = Wire::connect(proxy.listen).await;
    client
        .send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let until = Instant::now() + WITHIN;
    let head = client
        .until(b"\r\n\r\n", 64 * 1024, until)
        .await
        .expect("a head")
        .expect("not closed");
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", wire::lossy(&head));
    // The first chunk, as pingora re-chunks it.
    for _ in 0..64 {
        if find(&client.buf, b"hello").is_some() {
            break;
        }
        assert!(
            client.fill(until).await.expect("the first chunk"),
            "closed early"
        );
    }
    sent_head.notify_one();
    // What came after the head, through the close.
    let all = client
        .read_to_eof(until)
        .await
        .expect("a close, not a hang");
    assert!(
        find(&all, b"zz").is_none(),
        "bad bytes relayed: {}",
        wire::lossy(&all)
    );
    assert!(find(&all, b"world").is_none(), "{}", wire::lossy(&all));
    assert!(
        find(&all, b"0\r\n\r\n").is_none(),
        "cut must show: {}",
        wire::lossy(&all)
    );

    let before = origin.accepted();
    assert_eq!(
        fetch(Way::Http1, &proxy, "/good").await,
        Ok((200, "good".to_string()))
    );
    assert_eq!(last(&origin, "/good").nth, 0, "a fresh upstream connection");
    assert_eq!(origin.accepted(), before + 1);
}
