//! Statistics with made-up clocks.

use std::sync::Arc;
use std::time::Duration;

use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn counts_classes_errors_and_quantiles() {
    let stats = PoolStats::new(Duration::from_secs(30));
    let now = 1_000_000;
    for i in 0..100u64 {
        let class = if i % 10 == 0 {
            StatusClass::S5xx
        } else {
            StatusClass::S2xx
        };
        let latency = if i < 90 { 5 * MS } else { 800 * MS };
        stats.record(now + i, class, latency);
    }
    stats.record(now, StatusClass::Error, 3 * MS);
    stats.record(now, StatusClass::S4xx, 2 * MS);
    stats.record_failure(now, FailureKind::ConnectRefused);

    let w = stats.window(now + 100);
    assert_eq!(w.requests, 102);
    assert_eq!(w.count(StatusClass::S5xx), 10);
    assert_eq!(w.count(StatusClass::S2xx), 90);
    assert_eq!(w.count(StatusClass::S4xx), 1);
    assert_eq!(w.errors, 11, "5xx + error; 4xx is the client's");
    assert!((w.error_rate() - 11.0 * 100.0 / 102.0).abs() < 1e-9);
    assert_eq!(w.failures_of(FailureKind::ConnectRefused), 1);
    let within = |d: Option<Duration>, want: Duration| {
        let (got, want) = (d.unwrap().as_secs_f64(), want.as_secs_f64());
        (got - want).abs() / want <= 0.05
    };
    assert!(within(w.p50, 5 * MS));
    assert!(within(w.p95, 800 * MS));
    assert!(within(w.p99, 800 * MS));
}

#[test]
fn empty_window_has_no_figures() {
    let w = PoolStats::new(Duration::from_secs(10)).window(5_000);
    assert_eq!(w.requests, 0);
    assert_eq!(w.error_rate(), 0.0);
    assert_eq!((w.p50, w.p95, w.p99), (None, None, None));
}

#[test]
fn old_records_slide_out_of_the_window() {
    // 30 s window: 1 s slots.
    let stats = PoolStats::new(Duration::from_secs(30));
    stats.record(10_000, StatusClass::S5xx, MS);
    stats.record(25_000, StatusClass::S2xx, MS);
    assert_eq!(stats.window(25_000).requests, 2);
    assert_eq!(stats.window(38_999).requests, 2, "10 s record is 29 s old");
    let w = stats.window(40_500);
    assert_eq!(w.requests, 1, "the 10 s record has left a 30 s window");
    assert_eq!(w.errors, 0);
    assert_eq!(stats.window(60_000).requests, 0);
    // Totals never forget.
    assert_eq!(stats.totals().by_class[StatusClass::S5xx as usize], 1);
}

#[test]
fn reused_slots_do_not_leak_old_counts() {
    let stats = PoolStats::new(Duration::from_secs(3)); // 100 ms slots, 31-slot ring
    for lap in 0..5u64 {
        let now = lap * 3_100 + 50; // same ring position every lap
        stats.record(now, StatusClass::S2xx, MS);
        assert_eq!(
            stats.window(now).requests,
            1,
            "lap {lap}: only this lap's record"
        );
    }
}

#[test]
fn stale_records_are_dropped_not_misfiled() {
    let stats = PoolStats::new(Duration::from_secs(3));
    stats.record(10_000, StatusClass::S2xx, MS);
    // A record from one full ring earlier maps to the same slot: dropped.
    stats.record(10_000 - 3_100, StatusClass::S5xx, MS);
    let w = stats.window(10_000);
    assert_eq!((w.requests, w.errors), (1, 0));
}

#[test]
fn concurrent_records_sum_exactly() {
    let stats = Arc::new(PoolStats::new(Duration::from_secs(60)));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let stats = Arc::clone(&stats);
            std::thread::spawn(move || {
                for i in 0..50_000u64 {
                    let class = if (i + t) % 4 == 0 {
                        StatusClass::S5xx
                    } else {
                        StatusClass::S2xx
                    };
                    stats.record(5_000, class, Duration::from_micros(100 + i % 1000));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let w = stats.window(5_000);
    assert_eq!(w.requests, 200_000);
    assert_eq!(w.errors, 50_000);
    let totals = stats.totals();
    assert_eq!(totals.latency_count, 200_000);
    assert_eq!(totals.buckets.last().map(|b| b.1), Some(200_000));
}

#[test]
fn prometheus_buckets_are_cumulative() {
    let stats = PoolStats::new(Duration::from_secs(30));
    stats.record(0, StatusClass::S2xx, Duration::from_micros(300)); // ≤ 0.5 ms
    stats.record(0, StatusClass::S2xx, 20 * MS); // ≤ 25 ms
    stats.record(0, StatusClass::S2xx, Duration::from_secs(2)); // ≤ 2.5 s
    let t = stats.totals();
    let at = |le: f64| t.buckets.iter().find(|b| b.0 == le).map(|b| b.1);
    assert_eq!(at(0.0005), Some(1));
    assert_eq!(at(0.01), Some(1));
    assert_eq!(at(0.025), Some(2));
    assert_eq!(at(1.0), Some(2));
    assert_eq!(at(2.5), Some(3));
    assert_eq!(at(60.0), Some(3));
    assert_eq!(t.latency_count, 3);
    assert!(t.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
}

#[test]
fn status_classes() {
    assert_eq!(StatusClass::from_status(101), StatusClass::S2xx);
    assert_eq!(StatusClass::from_status(204), StatusClass::S2xx);
    assert_eq!(StatusClass::from_status(304), StatusClass::S3xx);
    assert_eq!(StatusClass::from_status(404), StatusClass::S4xx);
    assert_eq!(StatusClass::from_status(503), StatusClass::S5xx);
    assert_eq!(StatusClass::from_status(999), StatusClass::Error);
    assert_eq!(StatusClass::Error.label(), "error");
    assert_eq!(FailureKind::ReadTimeout.label(), "read_timeout");
}
