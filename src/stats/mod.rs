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

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// The request-path clock. `quanta` reads the CPU's invariant TSC where it
/// has one (falling back to the OS clock otherwise): on this project's VMs
/// `std::time::Instant::now()` costs ~55 ns, more than all of switchyard's
/// own per-request work, and the proxy reads the clock twice per request.
pub use quanta::Instant;

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Monotonic milliseconds since the process's stats clock started.
#[inline]
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// The same clock for an `Instant` already read: the proxy reads the time
/// once per request and uses it for both the latency and the window slot.
#[inline]
pub fn ms_at(instant: Instant) -> u64 {
    u64::try_from(
        instant
            .saturating_duration_since(process_start())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
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

/// Stripes per pool: the first `STRIPES - 1` threads that ever record get a
/// stripe of their own, in every pool; any later thread shares the last one.
///
/// A thread that owns its stripe is its only writer, so it updates counters
/// with a plain load and store instead of a locked read-modify-write — on the
/// request path that is the difference between ~12 ns and ~1 ns per counter
/// here — and proxy workers on different cores never bounce a cache line.
/// Readers sum all stripes with relaxed loads (a value may be a moment old,
/// never torn). Proxy workers are created at start and live as long as the
/// process, so they are the first to claim; threads beyond the budget
/// (rare: more than 7 workers) stay correct through atomic adds.
const STRIPES: usize = 8;
const SHARED_STRIPE: usize = STRIPES - 1;

/// This thread's stripe and whether it owns it exclusively.
#[inline]
fn my_stripe() -> (usize, bool) {
    static CLAIMED: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: (usize, bool) = {
            let n = CLAIMED.fetch_add(1, Ordering::Relaxed);
            if n < SHARED_STRIPE { (n, true) } else { (SHARED_STRIPE, false) }
        };
    }
    STRIPE.with(|s| *s)
}

/// Adds to a counter: a plain load + store for the stripe's only writer,
/// an atomic add when the stripe is shared.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64, exclusive: bool) {
    if exclusive {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Requests started and finished, for draining at shutdown: one pair of
/// counters per stripe, written only by the stripe's thread, so the request
/// path pays two uncontended stores and no shared cache line.
#[derive(Debug)]
pub struct RequestGauge {
    stripes: [GaugeStripe; STRIPES],
}

#[derive(Debug)]
#[repr(align(128))]
struct GaugeStripe {
    started: AtomicU64,
    finished: AtomicU64,
}

/// Every proxied request of the process, counted from `RequestCtx` creation
/// to its drop (pingora drops the context on every path a request can end by).
pub static REQUESTS: RequestGauge = RequestGauge {
    stripes: [const {
        GaugeStripe {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
        }
    }; STRIPES],
};

impl RequestGauge {
    /// Counts one request started; it is finished when the token drops.
    #[inline]
    pub fn start(&'static self) -> InFlightToken {
        let (index, exclusive) = my_stripe();
        bump(&self.stripes[index].started, 1, exclusive);
        InFlightToken(self)
    }

    /// Requests started and not finished yet. Finished counts are read
    /// first, so a request in flight during the whole read is never missed.
    pub fn in_flight(&self) -> u64 {
        let finished: u64 = self
            .stripes
            .iter()
            .map(|s| s.finished.load(Ordering::Acquire))
            .sum();
        let started: u64 = self
            .stripes
            .iter()
            .map(|s| s.started.load(Ordering::Acquire))
            .sum();
        started.saturating_sub(finished)
    }
}

/// One request in flight; dropping it counts the request finished.
#[derive(Debug)]
pub struct InFlightToken(&'static RequestGauge);

impl Drop for InFlightToken {
    #[inline]
    fn drop(&mut self) {
        let (index, exclusive) = my_stripe();
        bump(&self.0.stripes[index].finished, 1, exclusive);
    }
}

/// A stripe's cumulative counters, aligned to two cache lines (the
/// adjacent-line prefetcher pairs them) so that two stripes' counters never
/// share a line: they are written on every request by different cores.
#[derive(Debug, Default)]
#[repr(align(128))]
struct StripeTotals {
    by_class: [AtomicU64; 5],
    failures: [AtomicU64; 7],
    latency_us: AtomicU64,
}

/// One stripe: a window ring, cumulative totals and latency buckets, each in
/// heap allocations of its own.
#[derive(Debug)]
struct Stripe {
    window: SlidingWindow,
    totals: Box<StripeTotals>,
    latency: AtomicHistogram,
}

/// One pool's statistics, shared as `Arc<PoolStats>`.
#[derive(Debug)]
pub struct PoolStats {
    window_len: Duration,
    stripes: Box<[Stripe]>,
}

impl PoolStats {
    pub fn new(window: Duration) -> PoolStats {
        PoolStats {
            window_len: window,
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    window: SlidingWindow::new(window),
                    totals: Box::default(),
                    latency: AtomicHistogram::default(),
                })
                .collect(),
        }
    }

    pub fn window_len(&self) -> Duration {
        self.window_len
    }

    /// One finished request: its final class and its latency.
    #[inline]
    pub fn record(&self, now_ms: u64, class: StatusClass, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let (index, exclusive) = my_stripe();
        let stripe = &self.stripes[index];
        stripe.window.record(now_ms, class, micros, exclusive);
        bump(&stripe.totals.by_class[class as usize], 1, exclusive);
        bump(&stripe.totals.latency_us, micros, exclusive);
        stripe.latency.record(micros, exclusive);
    }

    /// One failed upstream attempt (each retry counts on its own).
    #[inline]
    pub fn record_failure(&self, now_ms: u64, kind: FailureKind) {
        let (index, exclusive) = my_stripe();
        let stripe = &self.stripes[index];
        stripe.window.record_failure(now_ms, kind, exclusive);
        bump(&stripe.totals.failures[kind as usize], 1, exclusive);
    }

    /// Figures over the window ending at `now_ms`.
    pub fn window(&self, now_ms: u64) -> WindowStats {
        let mut by_class = [0u64; 5];
        let mut failures = [0u64; 7];
        let mut latency = vec![0u64; BUCKETS];
        for stripe in self.stripes.iter() {
            stripe
                .window
                .add_sums(now_ms, &mut by_class, &mut failures, &mut latency);
        }
        WindowStats {
            requests: by_class.iter().sum(),
            errors: by_class[StatusClass::S5xx as usize] + by_class[StatusClass::Error as usize],
            by_class,
            failures,
            p50: quantile(&latency, 0.50),
            p95: quantile(&latency, 0.95),
            p99: quantile(&latency, 0.99),
        }
    }

    /// Cumulative requests, errors (5xx and no answer) and the fine
    /// latency histogram, for the guard's counts-since-the-change.
    pub fn counts(&self) -> (u64, u64, Vec<u64>) {
        let mut latency = vec![0u64; BUCKETS];
        let mut by_class = [0u64; 5];
        for stripe in self.stripes.iter() {
            stripe.latency.add_to(&mut latency);
            for (sum, c) in by_class.iter_mut().zip(stripe.totals.by_class.iter()) {
                *sum += c.load(Ordering::Relaxed);
            }
        }
        let errors = by_class[StatusClass::S5xx as usize] + by_class[StatusClass::Error as usize];
        (by_class.iter().sum(), errors, latency)
    }

    pub fn totals(&self) -> Totals {
        let mut fine = vec![0u64; BUCKETS];
        let mut by_class = [0u64; 5];
        let mut failures = [0u64; 7];
        let mut latency_us = 0u64;
        for stripe in self.stripes.iter() {
            stripe.latency.add_to(&mut fine);
            for (sum, c) in by_class.iter_mut().zip(stripe.totals.by_class.iter()) {
                *sum += c.load(Ordering::Relaxed);
            }
            for (sum, c) in failures.iter_mut().zip(stripe.totals.failures.iter()) {
                *sum += c.load(Ordering::Relaxed);
            }
            latency_us += stripe.totals.latency_us.load(Ordering::Relaxed);
        }
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
        Totals {
            latency_count: by_class.iter().sum(),
            by_class,
            failures,
            latency_sum: Duration::from_micros(latency_us),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests;
