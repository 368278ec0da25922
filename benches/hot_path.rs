//! The per-request hot path: choose a pool, choose a backend, record the
//! outcome — switchyard's own work on every request, measured alone.
//!
//! Compared in the same run against a naive baseline that does the same
//! job the obvious way: the split and the statistics behind one `Mutex`,
//! `rand::thread_rng`, and a `Vec`-bucket histogram. The decision it backs:
//! the lock-free table + atomics design must cost ≤ 100 ns per request on
//! one thread and give ≥ 5× the baseline's throughput with 2 threads
//! contending (the proxy's worker threads all record into the same pool).
//!
//! Run: `cargo bench --bench hot_path`

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::Rng;
use switchyard::config;
use switchyard::routing::{fast_random, RoutingTable};
use switchyard::stats::{ms_at, Instant as RequestClock, StatusClass};

const CONFIG: &str = r#"
[pools.blue]
backends = ["127.0.0.1:9001", "127.0.0.1:9003", { addr = "127.0.0.1:9005", weight = 3 }]
[pools.green]
backends = ["127.0.0.1:9002", "127.0.0.1:9004"]
[split]
blue = 90
green = 10
[[route]]
header = "x-canary"
equals = "true"
pool = "green"
# No health-check service runs here: backends count as up.
[health]
enabled = false
"#;

fn table() -> Arc<RoutingTable> {
    let config = Arc::new(config::parse(CONFIG, Path::new(".")).expect("bench config is valid"));
    Arc::new(RoutingTable::as_written(config))
}

/// switchyard's path: what `proxy.rs` does per request, minus pingora.
#[inline]
fn switchyard_request(
    table: &RoutingTable,
    headers: &http::HeaderMap,
    ip: IpAddr,
    started: RequestClock,
) -> usize {
    let pool_id = table
        .choose_pool(headers, Some(ip), fast_random())
        .map(|c| c.pool())
        .unwrap_or(0);
    let pool = &table.pools[pool_id];
    let backend = pool.pick_backend(fast_random(), None).unwrap_or(0);
    // As in the proxy: one clock read at the end for latency and slot.
    let end = RequestClock::now();
    pool.stats.record(
        ms_at(end),
        StatusClass::S2xx,
        end.saturating_duration_since(started),
    );
    backend
}

/// The naive way: one lock around shares and counters.
struct Naive {
    inner: Mutex<NaiveInner>,
}

struct NaiveInner {
    shares: Vec<(String, u32)>,
    backends: Vec<Vec<(String, u32)>>,
    requests: Vec<u64>,
    histogram: Vec<Vec<u64>>,
}

impl Naive {
    fn new() -> Naive {
        Naive {
            inner: Mutex::new(NaiveInner {
                shares: vec![("blue".into(), 90), ("green".into(), 10)],
                backends: vec![
                    vec![
                        ("127.0.0.1:9001".into(), 1),
                        ("127.0.0.1:9003".into(), 1),
                        ("127.0.0.1:9005".into(), 3),
                    ],
                    vec![("127.0.0.1:9002".into(), 1), ("127.0.0.1:9004".into(), 1)],
                ],
                requests: vec![0; 2],
                histogram: vec![vec![0; 400]; 2],
            }),
        }
    }

    fn request(&self, started: RequestClock) -> usize {
        // Like switchyard, it needs the time at the end for the latency.
        let latency_us = started.elapsed().as_micros() as u64;
        let mut rng = rand::thread_rng();
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let total: u32 = inner.shares.iter().map(|s| s.1).sum();
        let mut point = rng.gen_range(0..total);
        let mut pool = 0;
        for (i, (_, share)) in inner.shares.iter().enumerate() {
            if point < *share {
                pool = i;
                break;
            }
            point -= share;
        }
        let weights: u32 = inner.backends[pool].iter().map(|b| b.1).sum();
        let mut point = rng.gen_range(0..weights);
        let mut backend = 0;
        for (i, (_, w)) in inner.backends[pool].iter().enumerate() {
            if point < *w {
                backend = i;
                break;
            }
            point -= w;
        }
        inner.requests[pool] += 1;
        let bucket = (64 - latency_us.leading_zeros() as usize) * 16 % 400;
        inner.histogram[pool][bucket] += 1;
        backend
    }
}

/// Two long-lived worker threads, like a proxy's: each job runs `n`
/// operations on both and returns the wall time. Threads are created once
/// (as pingora creates its workers once), not per measurement.
struct Workers {
    jobs: Vec<std::sync::mpsc::Sender<u64>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Workers {
    fn new(op: Arc<dyn Fn() + Send + Sync>) -> Workers {
        let (done_tx, done) = std::sync::mpsc::channel();
        let jobs = (0..2)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel::<u64>();
                let (op, done_tx) = (Arc::clone(&op), done_tx.clone());
                std::thread::spawn(move || {
                    while let Ok(n) = rx.recv() {
                        for _ in 0..n {
                            op();
                        }
                        let _ = done_tx.send(());
                    }
                });
                tx
            })
            .collect();
        Workers { jobs, done }
    }

    fn run(&self, per_thread: u64) -> Duration {
        let start = Instant::now();
        for job in &self.jobs {
            let _ = job.send(per_thread);
        }
        for _ in &self.jobs {
            let _ = self.done.recv();
        }
        start.elapsed()
    }
}

fn bench(c: &mut Criterion) {
    let table = table();
    let naive = Arc::new(Naive::new());
    let headers = http::HeaderMap::new();
    let ip: IpAddr = [10, 1, 2, 3].into();
    // The request's start time is taken by pingora's hooks anyway (new_ctx);
    // here one fixed start stands in for it.
    let started = RequestClock::now();

    let mut group = c.benchmark_group("hot_path_1_thread");
    group.bench_function("switchyard", |b| {
        b.iter(|| black_box(switchyard_request(&table, &headers, ip, started)))
    });
    group.bench_function("naive_mutex", |b| {
        b.iter(|| black_box(naive.request(black_box(started))))
    });
    group.finish();

    // Where the time goes, piece by piece.
    let mut group = c.benchmark_group("hot_path_parts");
    group.bench_function("clock_read", |b| b.iter(|| black_box(RequestClock::now())));
    group.bench_function("std_clock_read", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    group.bench_function("choose_pool_and_backend", |b| {
        b.iter(|| {
            let pool = table
                .choose_pool(&headers, Some(ip), fast_random())
                .map(|c| c.pool())
                .unwrap_or(0);
            black_box(table.pools[pool].pick_backend(fast_random(), None))
        })
    });
    let stats = &table.pools[0].stats;
    group.bench_function("record", |b| {
        b.iter(|| {
            stats.record(
                black_box(5_000),
                StatusClass::S2xx,
                black_box(Duration::from_micros(1234)),
            )
        })
    });
    group.finish();

    // 2 threads on the same pool: the proxy's workers all record into it.
    let ours = {
        let (table, headers) = (Arc::clone(&table), headers.clone());
        Workers::new(Arc::new(move || {
            black_box(switchyard_request(&table, &headers, ip, started));
        }))
    };
    let theirs = {
        let naive = Arc::clone(&naive);
        Workers::new(Arc::new(move || {
            black_box(naive.request(started));
        }))
    };
    let mut group = c.benchmark_group("hot_path_2_threads");
    group.bench_function("switchyard", |b| {
        b.iter_custom(|iters| ours.run(iters.div_ceil(2)))
    });
    group.bench_function("naive_mutex", |b| {
        b.iter_custom(|iters| theirs.run(iters.div_ceil(2)))
    });
    group.finish();

    // A direct ratio from the same run, printed for the closing note.
    const OPS: u64 = 2_000_000;
    let (ours, theirs) = (ours.run(OPS / 2), theirs.run(OPS / 2));
    println!(
        "2-thread throughput: switchyard {:.1} ns/request, naive mutex {:.1} ns/request, ratio {:.1}x",
        ours.as_nanos() as f64 / OPS as f64,
        theirs.as_nanos() as f64 / OPS as f64,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
