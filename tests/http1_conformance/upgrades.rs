//! Chapters 12–13: `Upgrade` (101, then bytes both ways) and interim 1xx
//! responses before the final one.

use super::*;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// 12. Upgrade
// ---------------------------------------------------------------------------

both_paths!(upgrade_101_then_bytes_flow_both_ways);
async fn upgrade_101_then_bytes_flow_both_ways(path: ProxyPath) {
    let (origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    let r = exchange(
        &mut w,
        b"GET /ws HTTP/1.1\r\nHost: conformance.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 101, "{r:?}");
    assert!(r.head.has_token("upgrade", "websocket"), "{:?}", r.head);
    assert!(r.head.has_token("connection", "upgrade"), "{:?}", r.head);
    let forwarded = &origin.requests()[0].head;
    assert!(
        forwarded.has_token("upgrade", "websocket"),
        "{}",
        forwarded.raw
    );
    assert!(
        forwarded.has_token("connection", "upgrade"),
        "{}",
        forwarded.raw
    );

    let until = Instant::now() + MESSAGE;
    for message in [
        b"ping-1".to_vec(),
        b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n".to_vec(),
        pattern(100_000),
    ] {
        w.send(&message).await.expect("send upgraded bytes");
        let echoed = w.take(message.len(), until).await.expect("echoed bytes");
        assert!(echoed == message, "echoed {} bytes intact", message.len());
    }
    // The client closes its side: the proxy closes the tunnel.
    w.stream.shutdown().await.expect("shutdown");
    w.closed()
        .await
        .expect("tunnel closed after the client's close");
    path.assert_taken(&proxy, Sent::SomeForPingora).await;
}

// ---------------------------------------------------------------------------
// 13. 1xx
// ---------------------------------------------------------------------------

both_paths!(early_hints_then_the_final_response);
async fn early_hints_then_the_final_response(path: ProxyPath) {
    let (_origin, proxy) = origin_and_proxy(path).await;
    let mut w = Wire::connect(proxy.listen).await;
    for round in 0..2 {
        let r = exchange(&mut w, &get("/early")).await;
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        assert_eq!(r.body, b"after the hints\n");
        // The 103 may be forwarded or dropped; if forwarded, intact.
        for hint in &r.interim {
            assert!(hint.start.starts_with("HTTP/1.1 103"), "{hint:?}");
        }
    }
    let r = exchange(&mut w, &get("/cl")).await;
    assert_eq!((r.status, r.body.as_slice()), (200, CL_BODY), "{r:?}");
    path.assert_taken(&proxy, Sent::Plain).await;
}
