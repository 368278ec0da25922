//! One watch of one candidate pool: the sequential tests of every limit in
//! the policy, fed with the pool's (and its baseline's) cumulative counts
//! once per tick. Counts start fresh when the watch starts, so a new watch
//! — a canary retried right after a rollback, a cutover after a healthy
//! day — judges only the requests served since its change.
//!
//! Pure: counts and times come in as values.

use std::time::Duration;

use crate::clock::MonoMs;
use crate::config::GuardConfig;
use crate::stats::bucket_index;

use super::sequential::{Estimate, Evidence, RateTest, RelativeTest};

/// A pool's cumulative counts, read from its stats at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolCounts {
    pub requests: u64,
    /// 5xx answers and requests that got no answer.
    pub errors: u64,
    /// Cumulative latency histogram (`stats::BUCKETS` fine buckets).
    pub latency: Vec<u64>,
}

impl PoolCounts {
    /// Requests in `self` but not in `earlier`, and of them those slower
    /// than `limit`.
    fn since(&self, earlier: &PoolCounts) -> Batch {
        Batch {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

/// Requests finished between two reads.
#[derive(Debug, Clone, Default)]
struct Batch {
    requests: u64,
    errors: u64,
    latency: Vec<u64>,
}

impl Batch {
    /// Requests slower than `limit` (to the histogram's ≤ 3.2 % resolution:
    /// a request counts when its bucket lies above the limit's bucket).
    fn slower_than(&self, limit: Duration) -> u64 {
        let micros = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        let from = bucket_index(micros) + 1;
        self.latency.iter().skip(from).sum()
    }

    /// The latency below which `q` of the batch's requests fall.
    fn quantile(&self, q: f64) -> Option<Duration> {
        crate::stats::quantile(&self.latency, q)
    }
}

/// Marked requests over requests, since some moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    pub slow_p95: u64,
    pub slow_p99: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.slow_p95 += other.slow_p95;
        self.slow_p99 += other.slow_p99;
    }

    pub fn minus(self, earlier: Tally) -> Tally {
        Tally {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            slow_p95: self.slow_p95.saturating_sub(earlier.slow_p95),
            slow_p99: self.slow_p99.saturating_sub(earlier.slow_p99),
        }
    }
}

/// One test's name, what it guards and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct TestState {
    /// `error_rate`, `p95`, `p99`, `error_rate_vs_baseline`, `p95_vs_baseline`.
    pub test: &'static str,
    pub evidence: Evidence,
}

impl TestState {
    /// One line for the audit record, the webhook and the log.
    pub fn explain(&self, pool: &str, baseline: Option<(&str, Tally)>, now: MonoMs) -> String {
        let e = &self.evidence;
        let run = e.run;
        let age = e
            .age(now)
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "0s".into());
        let estimate = e
            .estimate()
            .map(|x| {
                format!(
                    "{:.1}%, 95% CI {:.1}–{:.1}%",
                    x.value * 100.0,
                    x.low * 100.0,
                    x.high * 100.0
                )
            })
            .unwrap_or_default();
        let what = match self.test {
            "error_rate" => "failed",
            "p95" => "were slower than max_p95",
            "p99" => "were slower than max_p99",
            "error_rate_vs_baseline" => "of the failures of both pools fell in it",
            _ => "were slower than the baseline's p95 times the ratio",
        };
        let limit = if self.test == "error_rate_vs_baseline" {
            format!("limit {}x the baseline's rate", e.limit)
        } else {
            format!("limit {:.2}%", e.limit * 100.0)
        };
        let mut line = format!(
            "guard: {} of pool {pool}: {} of {} requests {what} ({estimate}) in the last {age}, {limit}; \
             CUSUM statistic {:.2} >= bound {:.2}",
            self.test, run.marked, run.trials, e.statistic, e.bound
        );
        if let Some((name, t)) = baseline.filter(|(_, t)| t.requests > 0) {
            line.push_str(&format!(
                "; baseline {name}: {} of {} requests failed",
                t.errors, t.requests
            ));
        }
        line
    }
}

/// What the canary needs before its step may advance.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEvidence {
    /// Enough requests, every estimate within its limit.
    Ready { requests: u64 },
    /// Fewer than `needed` requests since the step began.
    Gathering { requests: u64, needed: u64 },
    /// Enough requests, but an estimate is above its limit (no trip yet).
    AboveLimit { requests: u64, what: String },
}

#[derive(Debug, Clone)]
pub struct WatchTests {
    policy: GuardConfig,
    last: PoolCounts,
    last_baseline: Option<PoolCounts>,
    /// Candidate and baseline counts since the watch began.
    pub candidate: Tally,
    pub baseline: Tally,
    errors: Option<RateTest>,
    p95: Option<RateTest>,
    p99: Option<RateTest>,
    errors_vs_baseline: Option<RelativeTest>,
    p95_vs_baseline: Option<RateTest>,
}

impl WatchTests {
    /// A watch starting now, with the counts read now as its zero.
    pub fn start(
        policy: &GuardConfig,
        candidate: PoolCounts,
        baseline: Option<PoolCounts>,
    ) -> WatchTests {
        let alpha = policy.alpha;
        let has_baseline = baseline.is_some();
        WatchTests {
            errors: policy
                .max_error_rate
                .filter(|r| *r < 100.0)
                .map(|r| RateTest::new(r / 100.0, alpha)),
            p95: policy.max_p95.map(|_| RateTest::new(0.05, alpha)),
            p99: policy.max_p99.map(|_| RateTest::new(0.01, alpha)),
            errors_vs_baseline: policy
                .max_error_rate_vs_baseline
                .filter(|_| has_baseline)
                .map(|r| RelativeTest::new(r, alpha)),
            p95_vs_baseline: policy
                .max_p95_vs_baseline
                .filter(|_| has_baseline)
                .map(|_| RateTest::new(0.05, alpha)),
            policy: policy.clone(),
            last: candidate,
            last_baseline: baseline,
            candidate: Tally::default(),
            baseline: Tally::default(),
        }
    }

    /// One tick: the counts read now; the batch began at `since` (the
    /// previous tick).
    pub fn observe(&mut self, since: MonoMs, candidate: PoolCounts, baseline: Option<PoolCounts>) {
        let batch = candidate.since(&self.last);
        self.last = candidate;
        let base_batch = match (&baseline, &self.last_baseline) {
            (Some(now), Some(before)) => Some(now.since(before)),
            _ => None,
        };
        if baseline.is_some() {
            self.last_baseline = baseline;
        }
        let tally = self.tally(&batch);
        self.candidate.add(tally);
        if let Some(t) = &mut self.errors {
            t.add(batch.requests, batch.errors, since);
        }
        if let (Some(t), Some(limit)) = (&mut self.p95, self.policy.max_p95) {
            t.add(batch.requests, batch.slower_than(limit), since);
        }
        if let (Some(t), Some(limit)) = (&mut self.p99, self.policy.max_p99) {
            t.add(batch.requests, batch.slower_than(limit), since);
        }
        let Some(base) = base_batch else {
            return;
        };
        let base_tally = self.tally(&base);
        self.baseline.add(base_tally);
        if let Some(t) = &mut self.errors_vs_baseline {
            t.add(
                (batch.requests, batch.errors),
                (base.requests, base.errors),
                since,
            );
        }
        if let (Some(t), Some(ratio), Some(base_p95)) = (
            &mut self.p95_vs_baseline,
            self.policy.max_p95_vs_baseline,
            base.quantile(0.95),
        ) {
            // "p95 at most `ratio` × the baseline's" is "at most 5 % of
            // requests slower than `ratio` × the baseline's p95".
            t.add(
                batch.requests,
                batch.slower_than(base_p95.mul_f64(ratio)),
                since,
            );
        }
    }

    fn tally(&self, batch: &Batch) -> Tally {
        Tally {
            requests: batch.requests,
            errors: batch.errors,
            slow_p95: self.policy.max_p95.map_or(0, |l| batch.slower_than(l)),
            slow_p99: self.policy.max_p99.map_or(0, |l| batch.slower_than(l)),
        }
    }

    /// Every test with its evidence, in a fixed order.
    pub fn tests(&self) -> Vec<TestState> {
        let mut out = Vec::new();
        let mut push = |test, evidence: Option<Evidence>| {
            if let Some(evidence) = evidence {
                out.push(TestState { test, evidence });
            }
        };
        push("error_rate", self.errors.as_ref().map(RateTest::evidence));
        push("p95", self.p95.as_ref().map(RateTest::evidence));
        push("p99", self.p99.as_ref().map(RateTest::evidence));
        push(
            "error_rate_vs_baseline",
            self.errors_vs_baseline.as_ref().map(RelativeTest::evidence),
        );
        push(
            "p95_vs_baseline",
            self.p95_vs_baseline.as_ref().map(RateTest::evidence),
        );
        out
    }

    /// The first test that has tripped, if any.
    pub fn tripped(&self) -> Option<TestState> {
        self.tests().into_iter().find(|t| t.evidence.tripped())
    }

    /// Whether the requests counted since `step_start` (a tally taken
    /// when the step began) let a canary step advance.
    pub fn step_evidence(&self, step_start: Tally) -> StepEvidence {
        let t = self.candidate.minus(step_start);
        let needed = self.policy.min_requests;
        if t.requests < needed {
            return StepEvidence::Gathering {
                requests: t.requests,
                needed,
            };
        }
        let rate = |n: u64| n as f64 / t.requests as f64;
        let mut above = Vec::new();
        if let Some(limit) = self.policy.max_error_rate {
            if rate(t.errors) * 100.0 > limit {
                above.push(format!(
                    "error rate {:.2}% > {limit}%",
                    rate(t.errors) * 100.0
                ));
            }
        }
        if self.policy.max_p95.is_some() && rate(t.slow_p95) > 0.05 {
            above.push(format!(
                "{:.2}% slower than max_p95",
                rate(t.slow_p95) * 100.0
            ));
        }
        if self.policy.max_p99.is_some() && rate(t.slow_p99) > 0.01 {
            above.push(format!(
                "{:.2}% slower than max_p99",
                rate(t.slow_p99) * 100.0
            ));
        }
        if above.is_empty() {
            StepEvidence::Ready {
                requests: t.requests,
            }
        } else {
            StepEvidence::AboveLimit {
                requests: t.requests,
                what: above.join(", "),
            }
        }
    }

    /// The candidate's error rate since the watch began.
    pub fn error_estimate(&self) -> Option<Estimate> {
        Estimate::of(self.candidate.errors, self.candidate.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BUCKETS;
    use std::path::Path;

    fn policy(extra: &str) -> GuardConfig {
        let text = format!("[pools.green]\nbackends = [\"127.0.0.1:1\"]\n[guard]\n{extra}");
        crate::config::parse(&text, Path::new("/"))
            .expect("valid")
            .guard
    }

    /// Cumulative counts with every request at `latency_us`.
    fn counts(requests: u64, errors: u64, latency_us: u64) -> PoolCounts {
        let mut latency = vec![0; BUCKETS];
        latency[bucket_index(latency_us)] = requests;
        PoolCounts {
            requests,
            errors,
            latency,
        }
    }

    fn at(ms: u64) -> MonoMs {
        MonoMs(ms)
    }

    #[test]
    fn counts_before_the_watch_are_not_evidence() {
        // 10 000 requests at 50 % errors before the watch began…
        let mut w = WatchTests::start(&policy(""), counts(10_000, 5_000, 1_000), None);
        // …then 2 000 clean ones.
        for tick in 1..=100 {
            w.observe(
                at(tick * 100),
                counts(10_000 + tick * 20, 5_000, 1_000),
                None,
            );
        }
        assert!(w.tripped().is_none());
        assert_eq!(w.candidate.requests, 2_000);
        assert_eq!(w.candidate.errors, 0);
    }

    #[test]
    fn failures_after_the_watch_began_trip_the_error_test() {
        let mut w = WatchTests::start(&policy(""), counts(0, 0, 1_000), None);
        let mut tick = 0;
        while w.tripped().is_none() {
            tick += 1;
            w.observe(at(tick * 100), counts(tick * 20, tick * 10, 1_000), None);
            assert!(tick < 20);
        }
        let trip = w.tripped().expect("tripped");
        assert_eq!(trip.test, "error_rate");
        let line = trip.explain("green", None, at(tick * 100 + 100));
        assert!(
            line.starts_with("guard: error_rate of pool green: "),
            "{line}"
        );
        assert!(line.contains("limit 5.00%"), "{line}");
        assert!(line.contains(">= bound 8.0"), "{line}");
    }

    #[test]
    fn slow_requests_trip_the_p95_test() {
        let mut w = WatchTests::start(&policy("max_p95 = \"500ms\"\n"), counts(0, 0, 1_000), None);
        let mut tick = 0;
        while w.tripped().is_none() {
            tick += 1;
            // Every request takes 800 ms.
            w.observe(at(tick * 100), counts(tick * 20, 0, 800_000), None);
            assert!(tick < 20);
        }
        assert_eq!(w.tripped().expect("tripped").test, "p95");
    }

    #[test]
    fn a_step_waits_for_min_requests_and_estimates_within_limits() {
        let mut w = WatchTests::start(&policy("min_requests = 50\n"), counts(0, 0, 1_000), None);
        w.observe(at(100), counts(30, 0, 1_000), None);
        assert_eq!(
            w.step_evidence(Tally::default()),
            StepEvidence::Gathering {
                requests: 30,
                needed: 50
            }
        );
        w.observe(at(200), counts(60, 0, 1_000), None);
        assert_eq!(
            w.step_evidence(Tally::default()),
            StepEvidence::Ready { requests: 60 }
        );
        // Counted from the step's own start, not the watch's.
        let step_start = w.candidate;
        assert!(matches!(
            w.step_evidence(step_start),
            StepEvidence::Gathering { requests: 0, .. }
        ));
        w.observe(at(300), counts(120, 6, 1_000), None);
        assert!(matches!(
            w.step_evidence(step_start),
            StepEvidence::AboveLimit { requests: 60, .. }
        ));
    }

    #[test]
    fn relative_tests_need_a_baseline() {
        let p = policy("max_error_rate = 100\nmax_error_rate_vs_baseline = 2.0\n");
        let alone = WatchTests::start(&p, counts(0, 0, 1_000), None);
        assert!(alone.tests().is_empty());
        let mut w = WatchTests::start(&p, counts(0, 0, 1_000), Some(counts(0, 0, 1_000)));
        // Both pools fail alike: no trip.
        for tick in 1..=300 {
            w.observe(
                at(tick * 100),
                counts(tick * 20, tick * 4, 1_000),
                Some(counts(tick * 180, tick * 36, 1_000)),
            );
        }
        assert!(w.tripped().is_none(), "{:?}", w.tests());
        assert_eq!(w.baseline.requests, 54_000);
    }
}
