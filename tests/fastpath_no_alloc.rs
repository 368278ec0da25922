//! The fast path proxies a keep-alive request without allocating: parse,
//! route, forward to a pooled upstream connection, relay the response,
//! record the outcome, write the access log line. The proxy, a raw origin
//! and a raw client run on one thread, over real loopback sockets, under a
//! counting global allocator.

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

async fn exchange(client: &mut TcpStream, buf: &mut [u8]) {
    client.write_all(REQUEST).await.expect("write request");
    let mut got = 0;
    while got < RESPONSE.len() {
        let read = client.read(&mut buf[got..]).await.expect("read response");
        assert!(read > 0, "proxy closed the connection");
        got += read;
    }
    assert_eq!(&buf[..got], RESPONSE);
}

/// Counts the allocations of 2000 requests on `client`, after a warm-up
/// (buffers, the upstream connection, timers, stats slots, the log ring).
async fn allocations_of_2000_requests(client: &mut TcpStream, buf: &mut [u8]) -> u64 {
    for _ in 0..200 {
        exchange(client, buf).await;
    }
    COUNTING.with(|c| c.set(true));
    // The counter must see this thread's allocations.
    let probe = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(Box::new(1u64)));
    assert!(
        ALLOCATIONS.load(Ordering::SeqCst) > probe,
        "counter is live"
    );
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..2000 {
        exchange(client, buf).await;
    }
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
    COUNTING.with(|c| c.set(false));
    allocated
}

/// Both with the access log off and on: the log is process-wide, so one
/// test runs the two rounds in order on one connection.
#[tokio::test]
async fn a_proxied_keep_alive_request_allocates_nothing() {
    let origin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin_addr = origin_listener.local_addr().expect("addr");
    tokio::spawn(origin(origin_listener));

    let log_dir = std::env::temp_dir().join(format!("sy-noalloc-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let log = log_dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let text = format!(
        "[pools.blue]\nbackends = [\"{origin_addr}\"]\n[split]\nblue = 100\n[health]\nenabled = false\n\
         [access_log]\npath = \"{}\"\nformat = \"json\"\n",
        log.display()
    );
    let config = Arc::new(config::parse(&text, Path::new(".")).expect("config"));
    let table = RoutingTable::as_written(Arc::clone(&config));
    let (shared, _publisher) = Shared::new(table);
    let (_shutdown, watch) = tokio::sync::watch::channel(false);

    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_addr = proxy_listener.local_addr().expect("addr");
    let serving = Arc::clone(&shared);
    tokio::spawn(async move {
        let (tcp, _) = proxy_listener.accept().await.expect("accept");
        let stream: L4Stream = tcp.into();
        let idle = switchyard::dataplane::fastpath::IdlePool::new();
        switchyard::dataplane::fastpath::serve(Box::new(stream), &serving, &idle, &watch).await;
    });

    let mut client = TcpStream::connect(proxy_addr).await.expect("connect");
    let mut buf = [0u8; 256];
    let run = async {
        let off = allocations_of_2000_requests(&mut client, &mut buf).await;
        switchyard::access_log::start(config.access_log.as_ref()).expect("start the access log");
        let on = allocations_of_2000_requests(&mut client, &mut buf).await;
        (off, on)
    };
    let (off, on) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("4400 requests within 60 s");
    assert_eq!(
        off, 0,
        "allocations during 2000 proxied requests, access log off"
    );
    assert_eq!(
        on, 0,
        "allocations during 2000 proxied requests, access log on"
    );
    assert_eq!(
        shared.pingora_handoffs.load(Ordering::Relaxed),
        0,
        "the requests took the fast path"
    );
    // The log was really on: every request of the second round, warm-up
    // included, has its line (the writer drains within ~100 ms).
    switchyard::access_log::writer::flush();
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&log_dir);
    assert_eq!(lines.lines().count(), 2200, "one line per logged request");
    let first: serde_json::Value =
        serde_json::from_str(lines.lines().next().unwrap_or_default()).expect("a JSON line");
    assert_eq!(first["target"], "/thing?x=1");
    assert_eq!(first["pool"], "blue");
    assert_eq!(switchyard::access_log::dropped(), 0);
}
