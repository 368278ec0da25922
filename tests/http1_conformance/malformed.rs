//! Chapter 10: malformed and hostile requests — 400s that never reach
//! the origin, Content-Length with Transfer-Encoding (smuggling), broken
//! chunked bodies, oversized heads.

use super::*;

// 10. Malformed and hostile requests
// ---------------------------------------------------------------------------

/// The status of the response to `request` on a fresh connection, or the
/// error text if the connection ended without one.
async fn status_of(proxy: &Proxy, request: &[u8]) -> Result<u16, String> {
    attempt(proxy.listen, request).await.map(|r| r.status)
}

both_paths!(malformed_requests_get_400_and_never_reach_the_origin);
async fn malformed_requests_get_400_and_never_reach_the_origin(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "space in a header name",
            b"GET /bad-name-1 HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".to_vec(),
        ),
        (
            "parenthesis in a header name",
            b"GET /bad-name-2 HTTP/1.1\r\nHost: x\r\nX(y): v\r\n\r\n".to_vec(),
        ),
        (
            "header line without a colon",
            b"GET /bad-name-3 HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n".to_vec(),
        ),
        (
            "two different Content-Length",
            b"POST /bad-cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        ),
        (
            "non-numeric Content-Length",
            b"POST /bad-cl-2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello".to_vec(),
        ),
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec()),
        (
            "unknown HTTP version",
            b"GET /bad-version HTTP/7.0\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"POST /bad-te-10 HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "obsolete line folding",
            b"GET /bad-fold HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n".to_vec(),
        ),
        (
            "control byte in a header value",
            b"GET /bad-ctl HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n".to_vec(),
        ),
        (
            "two Host headers",
            b"GET /bad-host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
        ),
        (
            "absolute-form target disagreeing with Host",
            b"GET http://a.example/bad-abs HTTP/1.1\r\nHost: b.example\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST /bad-te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
    ];
    for (what, request) in &cases {
        let outcome = status_of(&proxy, request).await;
        // pingora answers 400 to each of these (and closes).
        assert_eq!(outcome, Ok(400), "{what}");
        still_serving(&proxy).await;
    }
    // None of them reached the origin; only the still_serving GETs did.
    let lines = origin.lines();
    assert!(
        lines.iter().all(|l| l == "GET /cl HTTP/1.1"),
        "malformed requests reached the origin: {lines:?}"
    );
    assert_eq!(lines.len(), cases.len());
    path.assert_taken(&proxy, Sent::SomeForPingora).await;
}

both_paths!(content_length_with_transfer_encoding_smuggles_nothing);
async fn content_length_with_transfer_encoding_smuggles_nothing(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // TE.CL: read as chunked, the smuggled request is chunk data; read by
    // Content-Length (just the chunk-size line), it is a second request.
    let size_line = format!("{:x}\r\n", smuggled.len());
    let mut te_cl = format!(
        "POST /echo?te-cl HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{size_line}",
        size_line.len()
    )
    .into_bytes();
    te_cl.extend_from_slice(smuggled);
    te_cl.extend_from_slice(b"\r\n0\r\n\r\n");
    // CL.TE: read by Content-Length the smuggled request is body; read as
    // chunked, the body ends at `0` and the smuggled request follows.
    let mut cl_te = format!(
        "POST /echo?cl-te HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        5 + smuggled.len()
    )
    .into_bytes();
    cl_te.extend_from_slice(smuggled);
    // Obfuscated TE header variants.
    let mut te_space = te_cl.clone();
    let from = find(&te_space, b"Transfer-Encoding: chunked").expect("te header");
    te_space.splice(
        from..from + 26,
        b"Transfer-Encoding : chunked".iter().copied(),
    );
    let mut te_tab = te_cl.clone();
    let from = find(&te_tab, b"Transfer-Encoding: chunked").expect("te header");
    te_tab.splice(
        from..from + 26,
        b"Transfer-Encoding:\tchunked".iter().copied(),
    );
    let mut te_twice = te_cl.clone();
    let from = find(&te_twice, b"Transfer-Encoding: chunked").expect("te header");
    te_twice.splice(
        from..from + 26,
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"
            .iter()
            .copied(),
    );

    for (what, request) in [
        ("TE.CL", &te_cl),
        ("CL.TE", &cl_te),
        ("space before colon", &te_space),
        ("tab before chunked", &te_tab),
        ("chunked then identity", &te_twice),
    ] {
        let mut w = Wire::connect(proxy.listen).await;
        let _ = w.send(request).await;
        // Whatever comes back (400, or one response to a request handled
        // as chunked), the connection must not go on to serve a second one.
        let first = read_response(&mut w, false).await;
        if let Ok(r) = &first {
            assert!(
                r.status == 400 || r.status == 200,
                "{what}: {} {:?}",
                r.status,
                r.head
            );
            if r.status == 200 {
                assert!(
                    r.text().starts_with("POST /echo?"),
                    "{what}: answered by the POST: {r:?}"
                );
                // RFC 9112 §6.1: the server closes after such a request.
                assert!(r.closes(), "{what}: Connection: close: {:?}", r.head);
            }
            let second = read_response(&mut w, false).await;
            assert!(
                second.is_err(),
                "{what}: a second response on the connection: {second:?}"
            );
        }
        still_serving(&proxy).await;
    }
    let lines = origin.lines();
    assert!(
        lines.iter().all(|l| !l.contains("/smuggled")),
        "a smuggled request reached the origin: {lines:?}"
    );
    for request in origin.requests() {
        assert!(
            !(request.head.get("content-length").is_some()
                && request.head.get("transfer-encoding").is_some()),
            "both Content-Length and Transfer-Encoding forwarded: {}",
            request.head.raw
        );
        if request.method == "POST" {
            assert!(
                request.body.is_empty() || request.body == smuggled,
                "POST body as chunked: {:?}",
                String::from_utf8_lossy(&request.body)
            );
        }
    }
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(a_malformed_chunked_body_never_completes_a_request);
async fn a_malformed_chunked_body_never_completes_a_request(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let cases: [(&str, &[u8]); 4] = [
        ("chunk size not hex", b"zz\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk data longer than its size",
            b"5\r\nhelloXX\r\n0\r\n\r\n",
        ),
        (
            "chunk size overflowing 64 bits",
            b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("negative chunk size", b"-5\r\nhello\r\n0\r\n\r\n"),
    ];
    for (i, (what, body)) in cases.iter().enumerate() {
        let mut request = format!(
            "POST /echo?bad-chunk-{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(body);
        // pingora: forwards the head, fails on the bad chunk, answers 400
        // and drops the upstream connection mid-body.
        let outcome = attempt(proxy.listen, &request).await;
        assert_eq!(outcome.map(|r| r.status), Ok(400), "{what}");
        still_serving(&proxy).await;
    }
    // The origin may have seen the heads, but never a complete request.
    let completed: Vec<String> = origin.requests().into_iter().map(|r| r.target).collect();
    assert!(
        completed.iter().all(|t| t == "/cl"),
        "a malformed body completed a request: {completed:?}"
    );
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(oversized_heads_are_refused_or_bounded);
async fn oversized_heads_are_refused_or_bounded(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    // 100 KB in one header: pingora's head limit is 1 MiB, so it is
    // forwarded (200). A stricter proxy may answer 431/400 or close.
    let big = format!(
        "GET /big-header HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    match status_of(&proxy, big.as_bytes()).await {
        Ok(200) => {
            let seen = origin.requests();
            let forwarded = seen
                .iter()
                .find(|r| r.target == "/big-header")
                .expect("the 200 came from the origin");
            assert_eq!(forwarded.head.get("x-big").map(str::len), Some(100 * 1024));
        }
        Ok(status) => assert!((400..500).contains(&status), "100 KB header: {status}"),
        Err(_closed) => {}
    }
    still_serving(&proxy).await;

    // 2 MiB of head is over any sane limit: refused or closed, never served.
    let huge = format!(
        "GET /huge-header HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(2 * 1024 * 1024)
    );
    match status_of(&proxy, huge.as_bytes()).await {
        Ok(status) => assert!((400..500).contains(&status), "2 MiB header: {status}"),
        Err(_closed) => {}
    }
    // More header fields than a parser holds (pingora: 256).
    let mut many = String::from("GET /many-headers HTTP/1.1\r\nHost: x\r\n");
    for i in 0..400 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    match status_of(&proxy, many.as_bytes()).await {
        Ok(status) => assert!((400..500).contains(&status), "400 header fields: {status}"),
        Err(_closed) => {}
    }
    still_serving(&proxy).await;
    let lines = origin.lines();
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("/huge-header") && !l.contains("/many-headers")),
        "{lines:?}"
    );
    path.assert_taken(&proxy, Sent::SomeForPingora).await;
}
