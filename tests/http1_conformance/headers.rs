//! Chapter 11: header fidelity (order, case, repeats, values forwarded as
//! sent) and hop-by-hop fields staying on their hop.

use super::*;

// ---------------------------------------------------------------------------
// 11. Headers
// ---------------------------------------------------------------------------

both_paths!(headers_are_forwarded_faithfully);
async fn headers_are_forwarded_faithfully(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;

    let target = "/headers/a%20b/%2F?x=1&y=%2F&empty=&flag&q=a+b#";
    let target = target.trim_end_matches('#');
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: Example.TEST:8443\r\nX-Multi: one\r\nX-Other: o\r\n\
         X-Multi: two\r\nUser-Agent: conformance/1\r\n\r\n"
    );
    let r = exchange(&mut w, request.as_bytes()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header(POOL_HEADER),
        Some("app"),
        "pool header: {:?}",
        r.head
    );
    let seen = origin.requests();
    let forwarded = &seen[0].head;
    assert_eq!(
        forwarded.start,
        format!("GET {target} HTTP/1.1"),
        "request target passed exactly"
    );
    assert_eq!(
        forwarded.all("host"),
        vec!["Example.TEST:8443"],
        "Host unchanged"
    );
    assert_eq!(
        forwarded.all("x-multi"),
        vec!["one", "two"],
        "{}",
        forwarded.raw
    );
    assert_eq!(forwarded.get("x-other"), Some("o"));
    assert_eq!(forwarded.get("user-agent"), Some("conformance/1"));
    assert_eq!(
        forwarded.all("x-forwarded-for"),
        vec!["127.0.0.1"],
        "client address as a new X-Forwarded-For"
    );

    let r = exchange(
        &mut w,
        b"GET /headers HTTP/1.1\r\nHost: conformance.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.requests();
    assert_eq!(
        seen[1].head.all("x-forwarded-for"),
        vec!["1.2.3.4, 127.0.0.1"],
        "client address appended"
    );

    // Two X-Forwarded-For lines from the client. pingora's path keeps the
    // first line's value only ("1.1.1.1, 127.0.0.1"); RFC 9110 §5.3 makes
    // them one list, so "1.1.1.1, 2.2.2.2, 127.0.0.1" is the exact answer
    // (the fast path's).
    // Either way the client address is last and there is one line.
    let r = exchange(
        &mut w,
        b"GET /headers HTTP/1.1\r\nHost: conformance.test\r\nX-Forwarded-For: 1.1.1.1\r\n\
          X-Forwarded-For: 2.2.2.2\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.requests();
    let xff = seen[2].head.all("x-forwarded-for");
    assert_eq!(xff.len(), 1, "one X-Forwarded-For line: {xff:?}");
    assert!(
        xff[0] == "1.1.1.1, 127.0.0.1" || xff[0] == "1.1.1.1, 2.2.2.2, 127.0.0.1",
        "{xff:?}"
    );

    let r = exchange(&mut w, &get("/cookies")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.head.all("set-cookie"),
        vec!["a=1; Path=/", "b=2; HttpOnly"],
        "both Set-Cookie lines, in order: {:?}",
        r.head
    );
    assert_eq!(r.header(POOL_HEADER), Some("app"));
    assert_eq!(r.body, b"two cookies\n");
    path.assert_taken(&proxy, Sent::Plain).await;
}

both_paths!(hop_by_hop_headers_stay_on_their_hop);
async fn hop_by_hop_headers_stay_on_their_hop(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    let r = exchange(
        &mut w,
        b"GET /headers HTTP/1.1\r\nHost: conformance.test\r\nConnection: keep-alive, X-Hop\r\n\
          X-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          X-Keep: yes\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let forwarded = origin.requests()[0].head.clone();
    assert_eq!(forwarded.get("x-keep"), Some("yes"), "{}", forwarded.raw);
    for hop in ["x-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            forwarded.get(hop).is_none(),
            "{hop} forwarded: {}",
            forwarded.raw
        );
    }
    // pingora: sends no Connection header upstream at all (HTTP/1.1
    // keep-alive is the default).
    assert!(
        !forwarded.has_token("connection", "x-hop") && !forwarded.has_token("connection", "close"),
        "{}",
        forwarded.raw
    );

    // Response side. pingora: replaces the origin's Connection header with
    // its own (`keep-alive`) but passes the field it nominated (X-Resp-Hop)
    // and Keep-Alive on to the client, where RFC 9110 §7.6.1 would remove
    // them; so those two are not asserted either way.
    let r = exchange(&mut w, &get("/hop")).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"hop\n".as_slice()),
        "{r:?}"
    );
    assert_eq!(r.header("x-resp-end"), Some("end"), "{:?}", r.head);
    assert!(
        !r.head.has_token("connection", "x-resp-hop"),
        "the origin's Connection header is not the client's: {:?}",
        r.head
    );

    // Proxy credentials and non-WebSocket upgrades stay here too.
    let r = exchange(
        &mut w,
        b"GET /headers?2 HTTP/1.1\r\nHost: conformance.test\r\nProxy-Authorization: Basic eDp5\r\n\
          Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let forwarded = origin.requests()[2].head.clone();
    assert_eq!(forwarded.start, "GET /headers?2 HTTP/1.1");
    for hop in [
        "proxy-authorization",
        "upgrade",
        "http2-settings",
        "connection",
    ] {
        assert!(
            forwarded.get(hop).is_none(),
            "{hop} forwarded: {}",
            forwarded.raw
        );
    }

    // A Connection header must not strip the fields the proxy vouches for.
    // pingora: 400.
    for (what, request) in [
        (
            "x-forwarded-for",
            b"GET /headers?xff HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: X-Forwarded-For\r\n\r\n"
                .as_slice(),
        ),
        (
            "host",
            b"GET /headers?host HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n".as_slice(),
        ),
    ] {
        match attempt(proxy.listen, request).await {
            Ok(r) if r.status == 200 => {
                let seen = origin.requests();
                let forwarded = &seen.last().expect("forwarded").head;
                assert!(forwarded.get(what).is_some(), "{what} stripped: {}", forwarded.raw);
            }
            other => assert_eq!(other.map(|r| r.status), Ok(400), "Connection: {what}"),
        }
    }
    path.assert_taken(&proxy, Sent::SomeForPingora).await;
}
