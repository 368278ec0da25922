//! Inline per-pool statistics.
//!
//! Every finished request is recorded for its pool with a few relaxed
//! atomic adds — no lock, no allocation — into two places: a sliding window
//! (`window`) that `/status`, `/metrics` and the guard read, and cumulative
//! totals (never reset, so Prometheus counters never go backwards).
//!
//! - `histogram`: log-linear latency buckets, ≤ 5 % relative error
//! - `window`: the ring of time slots behind the sliding window
//!
//! Time is passed in as milliseconds from [`now_ms`] so everything here is
//! testable with made-up clocks.

mod histogram;
mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use histogram::{bucket_index, bucket_value, quantile, AtomicHistogram, BUCKETS};
use window::SlidingWindow;

/// Final outcome class of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    S2xx = 0,
    S3xx = 1,
    S4xx = 2,
    S5xx = 3,
    /// No response from upstream (connect failure, timeout, reset, no backend).
    Error = 4,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::S2xx,
        StatusClass::S3xx,
        StatusClass::S4xx,
        StatusClass::S5xx,
        StatusClass::Error,
    ];

    /// 1xx (e.g. 101 Switching Protocols) counts as success.
    #[inline]
    pub fn from_status(status: u16) -> StatusClass {
        match status {
            100..=299 => StatusClass::S2xx,
            300..=399 => StatusClass::S3xx,
            400..=499 => StatusClass::S4xx,
            500..=599 => StatusClass::S5xx,
            _ => StatusClass::Error,
        }
    }

    pub fn label(self) -> &'static str {
        ["2xx", "3xx", "4xx", "5xx", "error"][self as usize]
    }
}

/// Why one upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    ConnectRefused = 0,
    ConnectTimeout = 1,
    ReadTimeout = 2,
    WriteTimeout = 3,
    /// Connection closed or reset mid-request.
    Reset = 4,
    Tls = 5,
    Other = 6,
}

impl FailureKind {
    pub const ALL: [FailureKind; 7] = [
        FailureKind::ConnectRefused,
        FailureKind::ConnectTimeout,
        FailureKind::ReadTimeout,
        FailureKind::WriteTimeout,
        FailureKind::Reset,
        FailureKind::Tls,
        FailureKind::Other,
    ];

    pub fn label(self) -> &'static str {
        [
            "connect_refused",
            "connect_timeout",
            "read_timeout",
            "write_timeout",
            "reset",
            "tls",
            "other",
        ][self as usize]
    }
}

/// Monotonic milliseconds since the first call in this process.
#[inline]
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Figures over the sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    pub by_class: [u64; 5],
    pub failures: [u64; 7],
    /// 5xx answers plus requests that got no answer from upstream.
    pub errors: u64,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

impl WindowStats {
    /// Errors as a percentage of requests; 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }

    pub fn count(&self, class: StatusClass) -> u64 {
        self.by_class[class as usize]
    }

    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures[kind as usize]
    }
}

/// Cumulative figures since the pool's stats were created.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub by_class: [u64; 5],
    pub failures: [u64; 7],
    pub latency_sum: Duration,
    pub latency_count: u64,
    /// Prometheus buckets: (upper bound in seconds, cumulative count).
    pub buckets: Vec<(f64, u64)>,
}

/// Prometheus `le` bounds, seconds. Each cumulative count includes the fine
/// buckets whose upper edge is at or below the bound, so a count can be
/// short by the values of one fine bucket (≤ 6 % of the bound) — fine for
/// dashboards; the window quantiles above are computed from the fine buckets.
const PROMETHEUS_BOUNDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One pool's statistics, shared as `Arc<PoolStats>`.
#[derive(Debug)]
pub struct PoolStats {
    window: SlidingWindow,
    total_by_class: [AtomicU64; 5],
    total_failures: [AtomicU64; 7],
    total_latency_us: AtomicU64,
    total_latency: AtomicHistogram,
}

impl PoolStats {
    pub fn new(window: Duration) -> PoolStats {
        PoolStats {
            window: SlidingWindow::new(window),
            total_by_class: Default::default(),
            total_failures: Default::default(),
            total_latency_us: AtomicU64::new(0),
            total_latency: AtomicHistogram::default(),
        }
    }

    pub fn window_len(&self) -> Duration {
        self.window.window()
    }

    /// One finished request: its final class and its latency.
    #[inline]
    pub fn record(&self, now_ms: u64, class: StatusClass, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.window.record(now_ms, class, micros);
        self.total_by_class[class as usize].fetch_add(1, Ordering::Relaxed);
        self.total_latency_us.fetch_add(micros, Ordering::Relaxed);
        self.total_latency.record(micros);
    }

    /// One failed upstream attempt (each retry counts on its own).
    #[inline]
    pub fn record_failure(&self, now_ms: u64, kind: FailureKind) {
        self.window.record_failure(now_ms, kind);
        self.total_failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Figures over the window ending at `now_ms`.
    pub fn window(&self, now_ms: u64) -> WindowStats {
        let sums = self.window.sums(now_ms);
        let requests = sums.by_class.iter().sum();
        WindowStats {
            requests,
            errors: sums.by_class[StatusClass::S5xx as usize]
                + sums.by_class[StatusClass::Error as usize],
            by_class: sums.by_class,
            failures: sums.failures,
            p50: quantile(&sums.latency, 0.50),
            p95: quantile(&sums.latency, 0.95),
            p99: quantile(&sums.latency, 0.99),
        }
    }

    pub fn totals(&self) -> Totals {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut fine = vec![0u64; BUCKETS];
        self.total_latency.add_to(&mut fine);
        let mut buckets = Vec::with_capacity(PROMETHEUS_BOUNDS.len());
        let mut cumulative = 0;
        let mut index = 0;
        for bound in PROMETHEUS_BOUNDS {
            while index < BUCKETS && histogram::bucket_upper_seconds(index) <= bound + 1e-12 {
                cumulative += fine[index];
                index += 1;
            }
            buckets.push((bound, cumulative));
        }
        let by_class = self.total_by_class.each_ref().map(load);
        Totals {
            latency_count: by_class.iter().sum(),
            by_class,
            failures: self.total_failures.each_ref().map(load),
            latency_sum: Duration::from_micros(load(&self.total_latency_us)),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests;
