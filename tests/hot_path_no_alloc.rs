//! The per-request hot path — choose pool (route rules, sticky bucket,
//! split), choose backend, record the outcome — allocates nothing. A
//! counting global allocator (this test binary only) proves it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use switchyard::config;
use switchyard::routing::{fast_random, RoutingTable};
use switchyard::stats::{now_ms, FailureKind, StatusClass};

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
"#;

#[test]
fn choosing_and_recording_allocates_nothing() {
    let config = Arc::new(config::parse(CONFIG, Path::new(".")).unwrap());
    let table = RoutingTable::as_written(config);
    let mut plain = http::HeaderMap::new();
    plain.insert("user-agent", http::HeaderValue::from_static("test"));
    let mut sticky = plain.clone();
    sticky.insert("cookie", http::HeaderValue::from_static("a=1; session=abc"));
    let mut canary = plain.clone();
    canary.insert("x-canary", http::HeaderValue::from_static("true"));
    let ip = Some([192, 0, 2, 7].into());

    // Warm up thread-locals and the clock before counting.
    let _ = (fast_random(), now_ms());

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
        picked += pool.pick_backend(fast_random(), None).unwrap();
        pool.stats.record(
            now_ms(),
            StatusClass::S2xx,
            Duration::from_micros(u64::from(i)),
        );
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
}
