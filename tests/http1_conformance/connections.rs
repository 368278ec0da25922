//! Chapters 4–9: connection management — `Connection: close` and
//! HTTP/1.0, the origin closing, upstream keep-alive reuse, stale pooled
//! connections (retry only what is safe to retry), an origin dying
//! mid-response, dead backends.

use super::*;
use std::time::Duration;

use tokio::time::Instant;

// ---------------------------------------------------------------------------
// 4. Connection: close and HTTP/1.0
// ---------------------------------------------------------------------------

both_paths!(client_connection_close_gets_the_response_then_a_close);
async fn client_connection_close_gets_the_response_then_a_close(path: ProxyPath) {
    let (_origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    let r = exchange(
        &mut w,
        b"GET /cl HTTP/1.1\r\nHost: conformance.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
    assert!(r.closes(), "response says Connection: close: {:?}", r.head);
    w.closed().await.expect("proxy closes after the response");

    // Also with a body that is chunked at the origin.
    let mut w = Wire::connect(proxy.listen).await;
    let r = exchange(
        &mut w,
        b"GET /chunked HTTP/1.1\r\nHost: conformance.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.body, CHUNKED_BODY, "{r:?}");
    w.closed().await.expect("proxy closes after the response");
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(http10_requests_get_a_response_then_a_close);
async fn http10_requests_get_a_response_then_a_close(path: ProxyPath) {
    let (_origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    let r = exchange(
        &mut w,
        b"GET /cl HTTP/1.0\r\nHost: conformance.test\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
    assert!(
        r.closes(),
        "HTTP/1.0 without keep-alive: close: {:?}",
        r.head
    );
    w.closed()
        .await
        .expect("proxy closes after an HTTP/1.0 response");

    // The origin answers chunked; the HTTP/1.0 client can't decode that.
    let mut w = Wire::connect(proxy.listen).await;
    let r = exchange(
        &mut w,
        b"GET /chunked HTTP/1.0\r\nHost: conformance.test\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // pingora: sends `HTTP/1.1 200` with `Transfer-Encoding: chunked` to
    // an HTTP/1.0 client (RFC 9112 §6.1 says a server MUST NOT send
    // chunked to a 1.0 request). The body still decodes and the connection
    // closes; the correct framing would be close-delimited (or a length).
    assert!(
        matches!(
            r.framing,
            Framing::Close | Framing::Length | Framing::Chunked
        ),
        "{r:?}"
    );
    assert_eq!(r.body, CHUNKED_BODY, "{r:?}");
    w.closed()
        .await
        .expect("proxy closes after an HTTP/1.0 response");

    // HTTP/1.0 with explicit keep-alive: two requests on one connection.
    let mut w = Wire::connect(proxy.listen).await;
    let keep = b"GET /cl HTTP/1.0\r\nHost: conformance.test\r\nConnection: keep-alive\r\n\r\n";
    let r = exchange(&mut w, keep).await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
    if r.closes() {
        w.closed().await.expect("closed as announced");
    } else {
        let r = exchange(&mut w, keep).await;
        assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
    }
    path.assert_taken(&proxy, Sent::SomeForPingora).await;
}

// ---------------------------------------------------------------------------
// 5. The origin closes
// ---------------------------------------------------------------------------

both_paths!(origin_connection_close_does_not_break_the_client);
async fn origin_connection_close_does_not_break_the_client(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for round in 0..3 {
        let r = exchange(&mut w, &get("/origin-close")).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.body, b"last one on this connection\n");
        // pingora: the origin's `Connection: close` is hop-by-hop and
        // replaced by its own `Connection: keep-alive`; the client
        // connection stays open.
        w.reopen_if_closing(&r, proxy.listen).await;
        let r = exchange(&mut w, &get("/cl")).await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, CL_BODY),
            "round {round}: {r:?}"
        );
    }
    // The closed upstream connections were not reused.
    assert!(
        origin.accepted() >= 3,
        "{} upstream connections",
        origin.accepted()
    );
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
// 6. Upstream keep-alive
// ---------------------------------------------------------------------------

both_paths!(upstream_connections_are_reused);
async fn upstream_connections_are_reused(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for i in 0..20 {
        let r = exchange(&mut w, &get(&format!("/seq/{i}"))).await;
        assert_eq!(r.text(), format!("/seq/{i}\n"));
    }
    assert_eq!(origin.requests().len(), 20);
    assert!(
        origin.accepted() <= 3,
        "20 sequential requests took {} upstream connections",
        origin.accepted()
    );
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
// 7. Stale pooled upstream connections
// ---------------------------------------------------------------------------

both_paths!(a_stale_pooled_upstream_connection_is_not_an_error);
async fn a_stale_pooled_upstream_connection_is_not_an_error(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for round in 0..10 {
        // The origin answers keep-alive and closes right after: the proxy's
        // pooled connection is dead by the next request.
        let r = exchange(&mut w, &get(&format!("/stale?{round}"))).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.body, b"fresh\n", "round {round}");
        w.reopen_if_closing(&r, proxy.listen).await;
    }
    let answered = origin
        .lines()
        .iter()
        .filter(|l| l.starts_with("GET /stale?"))
        .count();
    assert_eq!(answered, 10, "{:?}", origin.lines());
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(a_pooled_connection_closed_under_a_get_is_retried);
async fn a_pooled_connection_closed_under_a_get_is_retried(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for round in 0..10 {
        // From the second round on, the proxy's pooled connection is closed
        // by the origin when the request arrives, without an answer: the
        // GET must be retried on a fresh connection.
        let r = exchange(&mut w, &get(&format!("/hangup-on-reuse?{round}"))).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.body, b"GET fresh\n", "round {round}");
        w.reopen_if_closing(&r, proxy.listen).await;
    }
    let lines = origin.lines();
    for round in 0..10 {
        let sent = lines
            .iter()
            .filter(|l| **l == format!("GET /hangup-on-reuse?{round} HTTP/1.1"))
            .count();
        assert!(
            (1..=2).contains(&sent),
            "round {round} sent {sent} times: {lines:?}"
        );
    }
    // pingora: 19 request lines (every round but the first hits the dead
    // pooled connection once, then a fresh one).
    assert!(
        lines.len() > 10,
        "the dead pooled connection was actually tried: {lines:?}"
    );
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(a_post_is_never_replayed_after_the_origin_closed_under_it);
async fn a_post_is_never_replayed_after_the_origin_closed_under_it(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for round in 0..3 {
        // A GET leaves a pooled connection that hangs up on its next request.
        let r = exchange(&mut w, &get(&format!("/hangup-on-reuse?get-{round}"))).await;
        assert_eq!(r.status, 200, "{r:?}");
        w.reopen_if_closing(&r, proxy.listen).await;
        let path = format!("/hangup-on-reuse?post-{round}");
        let r = exchange(&mut w, &post(&path, b"pay once")).await;
        // RFC 9110 §9.2.2: a proxy must not retry a non-idempotent request
        // by itself. Either it was sent on a fresh connection (200), or it
        // failed with a 5xx; it never reached the origin twice.
        assert!(
            (r.status == 200 && r.body == b"POST fresh\n") || (500..600).contains(&r.status),
            "round {round}: {r:?}"
        );
        let line = format!("POST {path} HTTP/1.1");
        let sent = origin.lines().iter().filter(|l| **l == line).count();
        assert_eq!(sent, 1, "round {round}: POST sent {sent} times");
        w.reopen_if_closing(&r, proxy.listen).await;
    }
    still_serving(&proxy).await;
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
// 8. The origin dies mid-response
// ---------------------------------------------------------------------------

both_paths!(an_origin_dying_mid_body_is_not_passed_off_as_complete);
async fn an_origin_dying_mid_body_is_not_passed_off_as_complete(path: ProxyPath) {
    let (_origin, proxy) = origin_and_proxy(path).await;
    for round in 0..3 {
        let mut w = Wire::connect(proxy.listen).await;
        w.send(&get("/die")).await.expect("send");
        match read_response(&mut w, false).await {
            Ok(r) => assert!(
                !(r.status == 200 && r.body.len() == 1000),
                "round {round}: a truncated body was completed: {r:?}"
            ),
            // pingora: the 200 head and the 10 bytes reach the client, then
            // the connection is closed: "closed after 10 of 1000 body bytes".
            Err(e) => assert!(
                e.contains("closed") || e.contains("read error"),
                "round {round}: ended by a close, not a hang: {e}"
            ),
        }
        assert!(w.eof || w.closed().await.is_ok(), "round {round}: closed");
        still_serving(&proxy).await;
    }
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
// 9. Dead backends
// ---------------------------------------------------------------------------

both_paths!(a_dead_backend_gives_a_quick_502);
async fn a_dead_backend_gives_a_quick_502(path: ProxyPath) {
    let dead = loopback(free_port());
    let proxy = proxy_to(&[dead], path).await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = attempt(proxy.listen, &get("/cl"))
            .await
            .expect("an error response, not a dropped connection");
        assert!(
            matches!(r.status, 502 | 503),
            "dead backend: {} {:?}",
            r.status,
            r.head
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "answered in {:?}",
            started.elapsed()
        );
    }
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(a_dead_backend_next_to_a_live_one_is_retried);
async fn a_dead_backend_next_to_a_live_one_is_retried(path: ProxyPath) {
    let origin = RawOrigin::start(app).await;
    let dead = loopback(free_port());
    let proxy = proxy_to(&[dead, origin.addr], path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for i in 0..30 {
        let r = exchange(&mut w, &get(&format!("/try/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.text(), format!("/try/{i}\n"));
        w.reopen_if_closing(&r, proxy.listen).await;
    }
    assert_eq!(origin.requests().len(), 30);
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
