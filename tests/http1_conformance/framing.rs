//! Chapters 1–3: how responses are framed (Content-Length, chunked with
//! extensions and trailers, close-delimited, HEAD/204/304, large bodies),
//! request bodies reaching the origin intact, and pipelining.

use super::*;
use std::time::Duration;

use tokio::time::Instant;

// ---------------------------------------------------------------------------
// 1. Response framing
// ---------------------------------------------------------------------------

both_paths!(response_framings_over_one_keepalive_connection);
async fn response_framings_over_one_keepalive_connection(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;

    let r = exchange(&mut w, &get("/cl")).await;
    assert_eq!((r.status, r.framing), (200, Framing::Length), "{r:?}");
    assert_eq!(r.body, CL_BODY);
    assert_eq!(r.header("content-length"), Some("22"));

    let r = exchange(&mut w, &get("/chunked")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), String::from_utf8_lossy(CHUNKED_BODY), "{r:?}");
    assert!(
        matches!(r.framing, Framing::Chunked | Framing::Length),
        "a chunked response stays framed: {r:?}"
    );
    assert!(r.header("content-length").is_none() || r.framing == Framing::Length);
    // pingora: re-chunks the body; the origin's chunk extensions and its
    // trailer fields are dropped (the `Trailer: X-Checksum` header itself
    // is still forwarded). The fast path passes the chunks on as they
    // came, extensions and trailer included. The decoded body is what
    // counts here.

    let r = exchange(
        &mut w,
        b"HEAD /head HTTP/1.1\r\nHost: conformance.test\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some("1234"),
        "HEAD keeps the origin's Content-Length: {r:?}"
    );
    // The next response parses cleanly: the HEAD response had no body bytes.
    let r = exchange(&mut w, &get("/cl")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");

    let r = exchange(&mut w, &get("/204")).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("x-kind"), Some("empty"));
    assert!(
        r.header("transfer-encoding").is_none() && r.header("content-length").is_none(),
        "no framing header added to a 204: {r:?}"
    );
    let r = exchange(&mut w, &get("/304")).await;
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(
        r.header("transfer-encoding").is_none() && r.header("content-length").is_none(),
        "no framing header added to a 304: {r:?}"
    );
    let r = exchange(&mut w, &get("/cl")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");

    let big = pattern(BIG);
    let r = exchange(&mut w, &get("/big-cl")).await;
    assert_eq!(
        (r.status, r.framing),
        (200, Framing::Length),
        "{:?}",
        r.head
    );
    assert_eq!(r.body.len(), BIG);
    assert!(r.body == big, "5 MB Content-Length body intact");
    let r = exchange(&mut w, &get("/big-chunked")).await;
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert_eq!(r.body.len(), BIG);
    assert!(r.body == big, "5 MB chunked body intact");

    // Close-delimited at the origin. pingora turns it into a chunked
    // response and keeps the client connection; a proxy that forwards it
    // close-delimited (the fast path does) must then close the connection
    // (read_response read up to the close).
    let r = exchange(&mut w, &get("/close")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, CLOSE_BODY, "full close-delimited body");
    match r.framing {
        Framing::Close => assert!(w.eof, "close-delimited means closed"),
        Framing::Chunked => {
            let r = exchange(&mut w, &get("/cl")).await;
            assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
        }
        other => panic!("close-delimited body forwarded as {other:?}: {r:?}"),
    }

    // Every request reached the origin exactly once, in order.
    let mut expected = vec![
        "GET /cl",
        "GET /chunked",
        "HEAD /head",
        "GET /cl",
        "GET /204",
        "GET /304",
        "GET /cl",
        "GET /big-cl",
        "GET /big-chunked",
        "GET /close",
    ];
    if !w.eof {
        expected.push("GET /cl");
    }
    let expected: Vec<String> = expected.iter().map(|l| format!("{l} HTTP/1.1")).collect();
    assert_eq!(origin.lines(), expected);
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
// 2. Request bodies
// ---------------------------------------------------------------------------

both_paths!(request_bodies_reach_the_origin_intact);
async fn request_bodies_reach_the_origin_intact(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;

    let small = b"hello world".as_slice();
    let r = exchange(&mut w, &post("/echo", small)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), echo_of("POST", "/echo", small));

    // Chunked with extensions and a trailer field.
    let chunked =
        b"POST /echo?te HTTP/1.1\r\nHost: conformance.test\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6;quoted=\"a;b\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let r = exchange(&mut w, chunked).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), echo_of("POST", "/echo?te", small));

    let upload = pattern(UPLOAD);
    let r = exchange(&mut w, &post("/echo?big", &upload)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), echo_of("POST", "/echo?big", &upload));

    let r = exchange(&mut w, &post_chunked("/echo?big-chunked", &upload, 8191)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), echo_of("POST", "/echo?big-chunked", &upload));

    // An empty body, and the connection is still in step afterwards.
    let r = exchange(&mut w, &post("/echo?empty", b"")).await;
    assert_eq!(r.text(), echo_of("POST", "/echo?empty", b""));
    let r = exchange(&mut w, &get("/cl")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");

    let requests = origin.requests();
    assert_eq!(requests.len(), 6, "{:?}", origin.lines());
    for request in &requests {
        assert!(
            !(request.head.get("content-length").is_some()
                && request.head.get("transfer-encoding").is_some()),
            "never both Content-Length and Transfer-Encoding: {}",
            request.head.raw
        );
    }
    assert_eq!(requests[1].body, small);
    assert!(requests[3].body == upload, "chunked upload intact");
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(expect_100_continue_post_gets_the_final_response);
async fn expect_100_continue_post_gets_the_final_response(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    let body = pattern(1000);
    w.send(
        b"POST /echo?expect HTTP/1.1\r\nHost: conformance.test\r\nContent-Length: 1000\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .expect("send head");
    // Wait (bounded) for the interim 100; send the body either way.
    let interim = w
        .until(
            b"\r\n\r\n",
            MAX_HEAD,
            Instant::now() + Duration::from_secs(2),
        )
        .await;
    let got_continue = match &interim {
        Ok(Some(raw)) => {
            let head = Head::parse(raw).expect("interim head");
            let (_, status) = status_line(&head.start).expect("status line");
            assert_eq!(status, 100, "only a 100 may come before the body: {head:?}");
            true
        }
        Ok(None) => panic!("proxy closed the connection instead of 100 Continue"),
        Err(_) => false,
    };
    w.send(&body).await.expect("send body");
    let r = read_response(&mut w, false).await.expect("final response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), echo_of("POST", "/echo?expect", &body));
    // pingora forwards the origin's own 100 Continue (the origin sends it
    // on seeing Expect, before reading the body).
    assert!(got_continue, "100 Continue reached the client within 2 s");
    // pingora: writing the 100 while the request body is still unread
    // turns keep-alive off (close_on_response_before_downstream_finish is
    // checked for 1xx heads too), so the final response says
    // `Connection: close` and the connection ends. Keeping it open is
    // equally correct; what matters is that the announcement is honoured.
    w.reopen_if_closing(&r, proxy.listen).await;
    let r = exchange(&mut w, &get("/cl")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
    assert_eq!(origin.requests().len(), 2);
    path.assert_taken(&proxy, Sent::Plain).await;
}

// ---------------------------------------------------------------------------
// 3. Pipelining
// ---------------------------------------------------------------------------

both_paths!(pipelined_requests_are_answered_in_order);
async fn pipelined_requests_are_answered_in_order(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let paths = ["/p1", "/p2", "/p3"];
    let mut w = Wire::connect(proxy.listen).await;
    w.send(&paths.iter().flat_map(|p| get(p)).collect::<Vec<u8>>())
        .await
        .expect("send three requests");
    let mut answered = Vec::new();
    for _ in 0..paths.len() {
        match read_response(&mut w, false).await {
            Ok(r) => {
                assert_eq!(r.status, 200, "{r:?}");
                answered.push(r.text());
            }
            Err(e) => {
                assert!(w.eof, "connection closed cleanly, not hung: {e}");
                break;
            }
        }
    }
    let expected: Vec<String> = paths.iter().map(|p| format!("{p}\n")).collect();
    assert!(!answered.is_empty(), "the first request is answered");
    assert_eq!(
        answered,
        expected[..answered.len()],
        "responses in request order"
    );
    // pingora (pipelining off by default): answers the first request, then
    // closes the connection without reading the others (RFC 9112 §9.3.2:
    // the client retries them). A proxy that does pipeline (the fast path)
    // answers all three.
    if answered.len() < paths.len() {
        w.closed().await.expect("closed after the last answer");
        let mut again = Wire::connect(proxy.listen).await;
        for path in &paths[answered.len()..] {
            let r = exchange(&mut again, &get(path)).await;
            assert_eq!(r.text(), format!("{path}\n"));
        }
    }
    // No request was lost, duplicated or reordered on the way to the origin.
    let lines: Vec<String> = paths.iter().map(|p| format!("GET {p} HTTP/1.1")).collect();
    assert_eq!(origin.lines(), lines);
    path.assert_taken(&proxy, Sent::Plain).await;
}
