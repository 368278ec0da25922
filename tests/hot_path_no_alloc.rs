//! The per-request hot path — choose pool (route rules, sticky bucket,
//! split), choose backend, record the outcome, with the access log on —
//! allocates nothing. A counting global allocator (this test binary only)
//! proves it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switchyard::access_log::Entry;
use switchyard::config;
use switchyard::dataplane::exchange::{Attempt, Outcome};
use switchyard::routing::{fast_random, RoutingTable};
use switchyard::stats::{now_ms, FailureKind, Instant};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{ALLOCATIONS, COUNTING};

const CONFIG: &str = r#"
[pools.blue]
backends = ["127.0.0.1:9001", { addr = "127.0.0.1:9003", weight = 3 }]
[pools.green]
backends = ["127.0.0.1:9002"]
[split]
blue = 90
green = 10
[sticky]
key = "cookie:session"
[[route]]
header = "x-canary"
equals = "true"
pool = "green"
# No health-check service runs here: backends count as up.
[health]
enabled = false
[access_log]
path = "{LOG}"
"#;

/// What the request path hands the exchange for the log line.
fn entry(status: u16) -> Entry<'static> {
    Entry {
        client: Some([192, 0, 2, 7].into()),
        method: b"GET",
        target: b"/thing?x=1",
        protocol: "HTTP/1.1",
        status,
        bytes: 5,
        duration: Duration::ZERO,
        upstream: Some(Duration::from_micros(50)),
        pool: None,
        backend: None,
        why: "split",
        request_id: b"0123456789abcdef0123456789abcdef",
        referer: b"",
        user_agent: b"test",
        failure: None,
    }
}

#[test]
fn choosing_and_recording_allocates_nothing() {
    let dir = std::env::temp_dir().join(format!("sy-hot-noalloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let text = CONFIG.replace("{LOG}", &log.display().to_string());
    let config = Arc::new(config::parse(&text, Path::new(".")).unwrap());
    switchyard::access_log::start(config.access_log.as_ref()).unwrap();
    let table = RoutingTable::as_written(config);
    let health = &table.config.health;
    let mut plain = http::HeaderMap::new();
    plain.insert("user-agent", http::HeaderValue::from_static("test"));
    let mut sticky = plain.clone();
    sticky.insert("cookie", http::HeaderValue::from_static("a=1; session=abc"));
    let mut canary = plain.clone();
    canary.insert("x-canary", http::HeaderValue::from_static("true"));
    let ip = Some([192, 0, 2, 7].into());

    // Warm up thread-locals (the log's line buffer and ring among them)
    // and the clock before counting.
    let _ = (fast_random(), now_ms());
    switchyard::access_log::record(&entry(200));

    // Prove the counter works on this thread before trusting a zero.
    COUNTING.with(|c| c.set(true));
    let probe = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(vec![1u8; 16]));
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        probe + 1,
        "the counter sees allocations"
    );

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut picked = 0usize;
    for i in 0..10_000u32 {
        let headers = match i % 3 {
            0 => &plain,
            1 => &sticky,
            _ => &canary,
        };
        let pool_id = table
            .choose_pool(headers, ip, fast_random())
            .unwrap()
            .pool();
        let pool = &table.pools[pool_id];
        let started = Instant::now();
        let mut attempt = Attempt::new();
        picked += attempt.pick(pool).unwrap();
        attempt.finish(pool, Outcome::Answered(200), started, health, || entry(200));
        if i % 100 == 0 {
            pool.stats
                .record_failure(now_ms(), FailureKind::ConnectRefused);
        }
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        after - before,
        0,
        "the hot path allocated {} times",
        after - before
    );
    assert!(picked > 0);
    // And the work was real: every request was counted.
    let counted: u64 = table
        .pools
        .iter()
        .map(|p| p.stats.window(now_ms()).requests)
        .sum();
    assert_eq!(counted, 10_000);
    // And every one was logged (the warm-up line too) or, where this loop
    // outran the writer, dropped and counted.
    switchyard::access_log::writer::flush();
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let (written, dropped) = (
        lines.lines().count() as u64,
        switchyard::access_log::dropped(),
    );
    assert!(written > 0, "the log was on");
    assert_eq!(
        written + dropped,
        10_001,
        "{written} written, {dropped} dropped"
    );
}
