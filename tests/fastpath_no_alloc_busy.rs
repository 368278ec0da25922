//! The fast path allocates nothing per request at 1 000 busy connections
//! either (a binary of its own: the access log of `fastpath_no_alloc` is
//! process-wide). The proxy, a raw origin and 1 000 raw clients run on one
//! thread, over real loopback sockets, under a counting global allocator.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::l4::stream::Stream as L4Stream;
use switchyard::config;
use switchyard::routing::RoutingTable;
use switchyard::shared::Shared;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{ALLOCATIONS, COUNTING};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const REQUEST: &[u8] = b"GET /thing?x=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t\r\n\r\n";

/// An origin that answers every request head with `RESPONSE`, from fixed
/// buffers (it must not allocate per request either).
async fn origin(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut filled = 0;
            loop {
                let Ok(read) = stream.read(&mut buf[filled..]).await else {
                    return;
                };
                if read == 0 {
                    return;
                }
                filled += read;
                while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    if stream.write_all(RESPONSE).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..filled, 0);
                    filled -= end + 4;
                }
            }
        });
    }
}

/// 1 000 keep-alive connections with a request on at once: once each has
/// been served (the warm-up), 5 more rounds of one request on every
/// connection, all in flight together, allocate nothing (the per-thread
/// buffer spares follow the number of busy connections; a fixed 64 meant
/// two 16 KiB buffers per request past 64).
#[tokio::test]
async fn a_thousand_busy_connections_allocate_nothing() {
    const CONNECTIONS: usize = 1000;
    let origin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin_addr = origin_listener.local_addr().expect("addr");
    tokio::spawn(origin(origin_listener));
    let text = format!(
        "[server]\nupstream_keepalive_pool = 4096\n\
         [pools.blue]\nbackends = [\"{origin_addr}\"]\n[split]\nblue = 100\n[health]\nenabled = false\n"
    );
    let config = Arc::new(config::parse(&text, Path::new(".")).expect("config"));
    let (shared, _publisher) = Shared::new(RoutingTable::as_written(config));
    let (_shutdown, watch) = tokio::sync::watch::channel(false);
    let idle = Arc::new(switchyard::dataplane::fastpath::IdlePool::new());

    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = proxy_listener.local_addr().expect("addr");
    let serving = Arc::clone(&shared);
    let serving_idle = Arc::clone(&idle);
    tokio::spawn(async move {
        for _ in 0..CONNECTIONS {
            let Ok((tcp, _)) = proxy_listener.accept().await else {
                return;
            };
            let stream: L4Stream = tcp.into();
            let (shared, idle, watch) = (
                Arc::clone(&serving),
                Arc::clone(&serving_idle),
                watch.clone(),
            );
            tokio::spawn(async move {
                switchyard::dataplane::fastpath::serve(Box::new(stream), &shared, &idle, &watch)
                    .await;
            });
        }
    });

    let run = async {
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            clients.push((
                TcpStream::connect(proxy_addr).await.expect("connect"),
                [0u8; 256],
            ));
        }
        // All requests of a round are written before any answer is read:
        // every connection is busy at once.
        async fn round(clients: &mut [(TcpStream, [u8; 256])]) {
            for (client, _) in clients.iter_mut() {
                client.write_all(REQUEST).await.expect("write request");
            }
            for (client, buf) in clients.iter_mut() {
                let mut got = 0;
                while got < RESPONSE.len() {
                    let read = client.read(&mut buf[got..]).await.expect("read response");
                    assert!(read > 0, "proxy closed the connection");
                    got += read;
                }
                assert_eq!(&buf[..got], RESPONSE);
            }
        }
        for _ in 0..2 {
            round(&mut clients).await;
        }
        COUNTING.with(|c| c.set(true));
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..5 {
            round(&mut clients).await;
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        COUNTING.with(|c| c.set(false));
        allocated
    };
    // Well inside the spares' 10 s trim window.
    let allocated = tokio::time::timeout(Duration::from_secs(8), run)
        .await
        .expect("7 000 requests on 1 000 connections within 8 s");
    assert_eq!(
        allocated, 0,
        "allocations during 5 000 requests on 1 000 busy connections"
    );
    assert_eq!(shared.pingora_handoffs.load(Ordering::Relaxed), 0);
}
