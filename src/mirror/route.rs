//! The mirror as the routing table carries it: which pool gets the copies,
//! which requests are copied, and the copies' own statistics — apart from
//! the pool's, so a mirrored request never counts as the pool's live
//! traffic nor as the guard's evidence about it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::config::{GuardConfig, MirrorConfig, Share};
use crate::guard::sequential::{Evidence, RateTest};
use crate::stats::{FailureKind, Instant, PoolStats, StatusClass};

/// Why a request that was chosen for a copy has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Its body is (or turned out) longer than `max_body`.
    BodyTooLarge = 0,
    /// Fast path: the body did not come whole with its head, and the fast
    /// path forwards bodies without keeping them.
    BodyNotBuffered = 1,
}

impl Skipped {
    pub const ALL: [Skipped; 2] = [Skipped::BodyTooLarge, Skipped::BodyNotBuffered];

    pub fn label(self) -> &'static str {
        ["body_too_large", "body_not_buffered"][self as usize]
    }
}

/// Why a copy was made and then not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The request thread's queue was full: the mirror falls behind.
    QueueFull = 0,
}

impl Dropped {
    pub const ALL: [Dropped; 1] = [Dropped::QueueFull];

    pub fn label(self) -> &'static str {
        ["queue_full"][self as usize]
    }
}

/// How one copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A final answer with this status, read to its end at `at`.
    Answered {
        status: u16,
        at: Instant,
    },
    Failed(FailureKind),
    /// The mirror pool had no usable backend: what its client would get.
    NoBackend,
}

/// The copies' figures for one mirror pool, kept across table builds while
/// the mirror pool stays the same ("since the mirror began").
#[derive(Debug)]
pub struct MirrorStats {
    pub pool: String,
    /// When mirroring to this pool began.
    pub since: SystemTime,
    /// Copies answered, by class, and their latency (from the copy's send
    /// to the end of its answer): the same counters as a pool's own.
    pub copies: PoolStats,
    dropped: [AtomicU64; Dropped::ALL.len()],
    skipped: [AtomicU64; Skipped::ALL.len()],
    /// The guard's absolute error-rate test on every copy since the mirror
    /// began (off the request path: the mirror worker feeds it).
    test: Mutex<Option<MirrorTest>>,
}

/// The error-rate test and the limits it was made for (a reload that
/// changes `max_error_rate` or `alpha` starts it again).
#[derive(Debug)]
struct MirrorTest {
    limit: f64,
    alpha: f64,
    test: RateTest,
}

/// What the mirror's error-rate test says now.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorEvidence {
    pub pool: String,
    /// Copies answered (any class) and failed (5xx or no answer), since the
    /// mirror began.
    pub copies: u64,
    pub errors: u64,
    /// `None`: `[guard] max_error_rate` is not set, or no copy was answered yet.
    pub test: Option<Evidence>,
    /// `[guard] max_error_rate`, percent.
    pub limit: Option<f64>,
}

impl MirrorStats {
    pub fn new(pool: &str, window: Duration) -> MirrorStats {
        MirrorStats {
            pool: pool.to_string(),
            since: SystemTime::now(),
            copies: PoolStats::new(window),
            dropped: Default::default(),
            skipped: Default::default(),
            test: Mutex::new(None),
        }
    }

    #[inline]
    pub fn count_dropped(&self, why: Dropped) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn count_skipped(&self, why: Skipped) {
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, why: Dropped) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    pub fn skipped(&self, why: Skipped) -> u64 {
        self.skipped[why as usize].load(Ordering::Relaxed)
    }

    /// One copy's answer (or failure), counted and fed to the error-rate
    /// test with the guard's limits in force.
    pub fn record(&self, class: StatusClass, started: Instant, guard: &GuardConfig) {
        let now = Instant::now();
        self.copies.record(
            crate::stats::ms_at(now),
            class,
            now.saturating_duration_since(started),
        );
        self.test_add(1, u64::from(is_failure(class)), now, guard);
    }

    /// A batch's outcomes (sent at `started`), counted and fed to the
    /// error-rate test as one batch: one lock per batch, not per copy.
    #[inline(never)]
    pub fn record_batch(&self, outcomes: &[Outcome], started: Instant, guard: &GuardConfig) {
        if outcomes.is_empty() {
            return;
        }
        let now = Instant::now();
        let now_ms = crate::stats::ms_at(now);
        let mut failed = 0;
        for outcome in outcomes {
            let (class, at) = match *outcome {
                Outcome::Answered { status, at } => (StatusClass::from_status(status), at),
                Outcome::Failed(kind) => {
                    self.copies.record_failure(now_ms, kind);
                    (StatusClass::Error, now)
                }
                Outcome::NoBackend => (StatusClass::Error, now),
            };
            failed += u64::from(is_failure(class));
            self.copies
                .record(now_ms, class, at.saturating_duration_since(started));
        }
        self.test_add(outcomes.len() as u64, failed, now, guard);
    }

    fn test_add(&self, copies: u64, failed: u64, now: Instant, guard: &GuardConfig) {
        let mut test = self.test.lock();
        match (guard.max_error_rate, test.as_ref()) {
            (None, _) => *test = None,
            (Some(limit), Some(t)) if t.limit == limit && t.alpha == guard.alpha => {}
            (Some(limit), _) => {
                *test = Some(MirrorTest {
                    limit,
                    alpha: guard.alpha,
                    test: RateTest::new(limit / 100.0, guard.alpha),
                })
            }
        }
        if let Some(t) = test.as_mut() {
            t.test.add(
                copies,
                failed,
                crate::clock::MonoMs(crate::stats::ms_at(now)),
            );
        }
    }

    /// The copies' record and the test's evidence, for `status` and the
    /// cutover check.
    pub fn evidence(&self) -> MirrorEvidence {
        let (copies, errors, _) = self.copies.counts();
        let test = self.test.lock();
        MirrorEvidence {
            pool: self.pool.clone(),
            copies,
            errors,
            test: test.as_ref().map(|t| t.test.evidence()),
            limit: test.as_ref().map(|t| t.limit),
        }
    }
}

/// 5xx or no answer: what the error-rate test counts as failed.
fn is_failure(class: StatusClass) -> bool {
    matches!(class, StatusClass::S5xx | StatusClass::Error)
}

/// The `[mirror]` of one routing table, compiled for the request path.
#[derive(Debug)]
pub struct MirrorRoute {
    /// Index of the mirror pool in the table's pools.
    pub pool: usize,
    /// Requests copied per 10 000 with a listed method.
    per_10k: u16,
    /// Upper-case method names, compared byte for byte.
    methods: Vec<Box<[u8]>>,
    pub max_body: usize,
    pub stats: Arc<MirrorStats>,
    pub config: MirrorConfig,
}

impl MirrorRoute {
    /// The route for `config`, its pool at `pool` in the table; statistics
    /// carried over from `previous` when it mirrored to the same pool with
    /// the same window.
    pub fn new(
        config: &MirrorConfig,
        pool: usize,
        window: Duration,
        previous: Option<&MirrorRoute>,
    ) -> MirrorRoute {
        let stats = match previous {
            Some(p) if p.config.pool == config.pool && p.stats.copies.window_len() == window => {
                Arc::clone(&p.stats)
            }
            _ => Arc::new(MirrorStats::new(&config.pool, window)),
        };
        MirrorRoute {
            pool,
            per_10k: config.percent.units(),
            methods: config
                .methods
                .iter()
                .map(|m| m.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            max_body: config.max_body,
            stats,
            config: config.clone(),
        }
    }

    /// Is this request (its method as sent, `random` a fresh random
    /// number) one to copy? A comparison or two and a modulo.
    #[inline]
    pub fn wants(&self, method: &[u8], random: u64) -> bool {
        self.per_10k > 0
            && self.methods.iter().any(|m| **m == *method)
            && (self.per_10k >= Share::FULL.units() || random % 10_000 < u64::from(self.per_10k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(percent: u16, methods: &[&str]) -> MirrorRoute {
        let config = MirrorConfig {
            pool: "green".into(),
            percent: Share(percent),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            max_body: 10,
        };
        MirrorRoute::new(&config, 1, Duration::from_secs(30), None)
    }

    #[test]
    fn only_listed_methods_and_the_share_are_copied() {
        let all = route(10_000, &["GET", "HEAD"]);
        assert!(all.wants(b"GET", 9_999) && all.wants(b"HEAD", 0));
        assert!(!all.wants(b"POST", 0) && !all.wants(b"get", 0));
        let tenth = route(1_000, &["GET"]);
        let copied = (0..100_000u64).filter(|r| tenth.wants(b"GET", *r)).count();
        assert_eq!(copied, 10_000);
        assert!(!route(0, &["GET"]).wants(b"GET", 0));
    }

    #[test]
    fn statistics_survive_a_rebuild_to_the_same_pool_only() {
        let first = route(100, &["GET"]);
        first.stats.count_dropped(Dropped::QueueFull);
        let same = MirrorRoute::new(&first.config, 0, Duration::from_secs(30), Some(&first));
        assert_eq!(same.stats.dropped(Dropped::QueueFull), 1);
        let mut other = first.config.clone();
        other.pool = "blue".into();
        let moved = MirrorRoute::new(&other, 0, Duration::from_secs(30), Some(&first));
        assert_eq!(moved.stats.dropped(Dropped::QueueFull), 0);
    }

    #[test]
    fn failing_copies_trip_the_error_rate_test_and_healthy_ones_do_not() {
        let text = "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[split]\nblue = 100\n\
                    [guard]\nmax_error_rate = 5.0\n";
        let guard = crate::config::parse(text, std::path::Path::new("/"))
            .unwrap()
            .guard;
        let healthy = MirrorStats::new("green", Duration::from_secs(30));
        let failing = MirrorStats::new("green", Duration::from_secs(30));
        for i in 0..400u32 {
            let ok = if i % 50 == 0 {
                StatusClass::S5xx
            } else {
                StatusClass::S2xx
            };
            healthy.record(ok, Instant::now(), &guard);
            let bad = if i % 4 == 0 {
                StatusClass::S5xx
            } else {
                StatusClass::S2xx
            };
            failing.record(bad, Instant::now(), &guard);
        }
        let h = healthy.evidence();
        assert_eq!((h.copies, h.errors), (400, 8));
        assert!(!h.test.unwrap().tripped());
        let f = failing.evidence();
        assert_eq!((f.copies, f.errors), (400, 100));
        assert!(f.test.unwrap().tripped());
        assert_eq!(f.limit, Some(5.0));
    }
}
