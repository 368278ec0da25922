//! Sequential tests on request counts: the statistics behind every
//! automatic rollback.
//!
//! Every limit the guard enforces is a rate of a yes/no mark per request:
//! failed (5xx or no answer), slower than `max_p95` (allowed: 5 %), slower
//! than `max_p99` (1 %). So one machinery serves them all, fed with integer
//! counts once per guard tick (a *batch*: the requests that finished since
//! the last tick).
//!
//! **The test: CUSUM on the Bernoulli likelihood ratio, a few alternatives
//! at once.** For a limit `p0` and an alternative `p1 > p0`, each request
//! adds `ln(p1/p0)` when marked and `ln((1-p1)/(1-p0))` when not; the
//! statistic is `W = max(0, W + batch sum)` and the test trips when `W`
//! reaches `bound`. Why this form:
//! - *Not diluted by a healthy stretch.* A healthy pool drives `W` down to
//!   0 and it stays there: the `max(0, …)` forgets history that a point
//!   estimate over the watch (or a mixture SPRT started at the change) would
//!   carry, so a failure that starts 10 s after the change is caught about
//!   as fast as one that starts with it (`benches/guard.rs` measures both).
//! - *Checking often costs nothing.* `W` is a function of the counts, not
//!   of how often it is looked at: a tick every 100 ms and a tick every
//!   second see the same evidence, unlike a threshold on a window rate,
//!   which is a new test at every look.
//! - *False alarms are bounded by the bound.* At the limit itself
//!   (`p = p0`), `e^W` is a likelihood ratio, so each excursion of `W` from
//!   0 reaches `bound` with probability at most `e^-bound`; below the limit
//!   much less (the walk drifts down). The bound is `ln(ARMS / alpha)`
//!   (Bonferroni over the alternatives), and the seeded simulation checks
//!   the promise that matters to an operator: at most `alpha`-scale false
//!   rollbacks in healthy 10-minute watches at half the limit, at 50, 200
//!   and 1 000 req/s.
//! - *Several alternatives.* One fixed `p1` is fast only near `p1`; the
//!   arms at 1.5×, 2× and 3× the limit (capped below 1) each run their own
//!   CUSUM, and the first to reach the bound trips: a total outage trips in
//!   eight requests, a rate just above the limit as soon as the evidence
//!   exists. (A 5× arm was tried: 20 % errors against 5 % were caught no
//!   faster, and it tripped falsely three times as often at 50 req/s: its
//!   big steps turn a lone failure into a long excursion.)
//!
//! **Relative to a baseline**, the same machinery on failures alone:
//! under "the candidate's rate is at most `ratio` × the baseline's", a
//! failure in a batch falls in the candidate with probability at most
//! `q0 = ratio·n_c / (ratio·n_c + n_b)` (the two pools' request counts in
//! that batch, known exactly even while a canary ramps). That is a
//! Bernoulli trial per failure, tested like the rates above; an outage that
//! hits both pools alike moves both counts and never the share.
//!
//! Everything here is a pure function of counts and times passed in.

use std::time::Duration;

use crate::clock::MonoMs;

/// Alternatives each test runs, as multiples of its limit (rates are
/// capped at `MAX_ALTERNATIVE`).
const ALTERNATIVES: [f64; ARMS] = [1.5, 2.0, 3.0];
const ARMS: usize = 3;
const MAX_ALTERNATIVE: f64 = 0.999;

/// The statistic's bound for a chance `alpha` of a false trip.
pub fn bound(alpha: f64) -> f64 {
    (ARMS as f64 / alpha.clamp(1e-12, 1.0)).ln()
}

/// Counts since an arm's statistic last left zero: the evidence behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Run {
    pub trials: u64,
    pub marked: u64,
    /// When the first batch of this run began; `None` while `W` is 0.
    pub since: Option<MonoMs>,
}

/// Requests per CUSUM step. The statistic is clipped at 0 only between
/// groups of at least this many requests: at 50 req/s a 100 ms tick holds
/// 5 requests, and clipping after every one of them lets a lone failure
/// start a fresh excursion each time (the seeded simulation measured about
/// 1 false trip in 1 000 healthy 10-minute watches at half the limit).
/// A trip is still seen at once: a group in progress is counted in the
/// statistic that is compared with the bound.
pub const GROUP: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Arm {
    /// Log-likelihood ratio of one marked and one unmarked trial.
    marked: f64,
    unmarked: f64,
    /// The statistic at the end of the last full group.
    settled: f64,
    /// The log-likelihood ratio of the group in progress.
    pending: f64,
    pending_trials: u64,
    /// `settled + pending`, never below 0.
    statistic: f64,
    run: Run,
}

impl Arm {
    fn new(p0: f64, p1: f64) -> Arm {
        Arm {
            marked: (p1 / p0).ln(),
            unmarked: ((1.0 - p1) / (1.0 - p0)).ln(),
            settled: 0.0,
            pending: 0.0,
            pending_trials: 0,
            statistic: 0.0,
            run: Run::default(),
        }
    }

    fn add(&mut self, trials: u64, marked: u64, batch_start: MonoMs) {
        let marked = marked.min(trials);
        self.pending += marked as f64 * self.marked + (trials - marked) as f64 * self.unmarked;
        self.pending_trials += trials;
        if self.run.since.is_none() {
            self.run.since = Some(batch_start);
        }
        self.run.trials += trials;
        self.run.marked += marked;
        self.statistic = (self.settled + self.pending).max(0.0);
        if self.pending_trials < GROUP {
            return;
        }
        // A full group: the CUSUM step proper.
        self.settled = self.statistic;
        self.pending = 0.0;
        self.pending_trials = 0;
        if self.settled == 0.0 {
            self.run = Run::default();
        }
    }
}

/// What a test has seen, for the audit record, the webhook, `status` and
/// `switchyard_guard_evidence` (the statistic over the bound: 1.0 = trip).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub statistic: f64,
    pub bound: f64,
    /// The arm with the most evidence and its counts.
    pub run: Run,
    /// The rate the test guards against: a fraction, not a percentage.
    pub limit: f64,
}

impl Evidence {
    /// Statistic over bound: 0 = nothing against the pool, 1 = trip.
    pub fn ratio(&self) -> f64 {
        if self.bound > 0.0 {
            self.statistic / self.bound
        } else {
            0.0
        }
    }

    pub fn tripped(&self) -> bool {
        self.statistic >= self.bound
    }

    /// The marked fraction of the run, with a 95 % Wilson interval.
    pub fn estimate(&self) -> Option<Estimate> {
        Estimate::of(self.run.marked, self.run.trials)
    }

    /// Time from the start of the evidence to `now`: how long the pool was
    /// misbehaving before the trip (to the resolution of one tick).
    pub fn age(&self, now: MonoMs) -> Option<Duration> {
        self.run.since.map(|since| now.since(since))
    }
}

/// A fraction with a 95 % Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    pub fn of(marked: u64, trials: u64) -> Option<Estimate> {
        if trials == 0 {
            return None;
        }
        let n = trials as f64;
        let p = marked.min(trials) as f64 / n;
        let z = 1.959_964_f64;
        let z2 = z * z;
        let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
        let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
        Some(Estimate {
            value: p,
            low: (centre - half).max(0.0),
            high: (centre + half).min(1.0),
        })
    }
}

/// "The rate of marked requests is at most `limit`", tested sequentially.
#[derive(Debug, Clone, PartialEq)]
pub struct RateTest {
    limit: f64,
    bound: f64,
    arms: [Arm; ARMS],
}

impl RateTest {
    /// `limit` is a fraction in (0, 1); `alpha` the false-trip budget.
    pub fn new(limit: f64, alpha: f64) -> RateTest {
        let p0 = limit.clamp(1e-6, MAX_ALTERNATIVE - 1e-3);
        RateTest {
            limit: p0,
            bound: bound(alpha),
            arms: ALTERNATIVES.map(|k| Arm::new(p0, (p0 * k).min(MAX_ALTERNATIVE))),
        }
    }

    /// One batch: `trials` requests finished since the last update, of
    /// which `marked` failed (or were slow); the batch began at `start`.
    pub fn add(&mut self, trials: u64, marked: u64, start: MonoMs) {
        if trials == 0 {
            return;
        }
        for arm in &mut self.arms {
            arm.add(trials, marked, start);
        }
    }

    pub fn evidence(&self) -> Evidence {
        strongest(&self.arms, self.bound, self.limit)
    }
}

/// "The candidate's failure rate is at most `ratio` × the baseline's",
/// tested on where the failures fall.
#[derive(Debug, Clone, PartialEq)]
pub struct RelativeTest {
    ratio: f64,
    bound: f64,
    /// Statistics per alternative ratio (`ratio` × the multiples).
    arms: [Arm; ARMS],
    /// Both pools' counts over the same period, for the audit record.
    pub candidate: (u64, u64),
    pub baseline: (u64, u64),
}

impl RelativeTest {
    pub fn new(ratio: f64, alpha: f64) -> RelativeTest {
        RelativeTest {
            ratio: ratio.max(1e-3),
            bound: bound(alpha),
            // The arms' log-likelihood ratios depend on each batch's traffic
            // shares, so they are computed per batch; `Arm` keeps the sums.
            arms: [Arm::new(0.5, 0.5); ARMS],
            candidate: (0, 0),
            baseline: (0, 0),
        }
    }

    /// One batch of both pools: requests and failures each, over the same
    /// period. A batch in which either pool served nothing says nothing
    /// about how they compare.
    pub fn add(&mut self, candidate: (u64, u64), baseline: (u64, u64), start: MonoMs) {
        let (nc, xc) = (candidate.0, candidate.1.min(candidate.0));
        let (nb, xb) = (baseline.0, baseline.1.min(baseline.0));
        if nc == 0 || nb == 0 {
            return;
        }
        self.candidate = (self.candidate.0 + nc, self.candidate.1 + xc);
        self.baseline = (self.baseline.0 + nb, self.baseline.1 + xb);
        let failures = xc + xb;
        if failures == 0 {
            return;
        }
        let share = |ratio: f64| ratio * nc as f64 / (ratio * nc as f64 + nb as f64);
        let q0 = share(self.ratio).min(MAX_ALTERNATIVE);
        for (arm, k) in self.arms.iter_mut().zip(ALTERNATIVES) {
            let q1 = share(self.ratio * k).min(MAX_ALTERNATIVE);
            if q1 <= q0 {
                continue;
            }
            arm.marked = (q1 / q0).ln();
            arm.unmarked = ((1.0 - q1) / (1.0 - q0)).ln();
            arm.add(failures, xc, start);
        }
    }

    pub fn evidence(&self) -> Evidence {
        strongest(&self.arms, self.bound, self.ratio)
    }
}

fn strongest(arms: &[Arm; ARMS], bound: f64, limit: f64) -> Evidence {
    let best = arms
        .iter()
        .max_by(|a, b| a.statistic.total_cmp(&b.statistic))
        .copied()
        .unwrap_or(arms[0]);
    Evidence {
        statistic: best.statistic,
        bound,
        run: best.run,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA: f64 = 0.001;

    fn at(ms: u64) -> MonoMs {
        MonoMs(ms)
    }

    #[test]
    fn a_pool_within_its_limit_never_gathers_evidence() {
        let mut test = RateTest::new(0.05, ALPHA);
        // 10 minutes of 100 ms batches at 1 % errors, spread evenly.
        for tick in 0..6_000u64 {
            test.add(20, u64::from(tick % 5 == 0), at(tick * 100));
        }
        assert!(!test.evidence().tripped());
        assert!(test.evidence().ratio() < 0.2, "{:?}", test.evidence());
    }

    #[test]
    fn a_total_outage_trips_within_a_few_requests() {
        let mut test = RateTest::new(0.05, ALPHA);
        let mut requests = 0;
        while !test.evidence().tripped() {
            test.add(1, 1, at(requests));
            requests += 1;
            assert!(requests < 20, "no trip after {requests} failed requests");
        }
        // ln(3000)/ln(3) ≈ 7.3: eight failures in a row.
        assert_eq!(requests, 8);
    }

    #[test]
    fn a_healthy_stretch_does_not_dilute_later_failures() {
        let fresh = batches_to_trip(RateTest::new(0.05, ALPHA), 0);
        // 10 minutes at 0.1 % errors first.
        let seasoned = batches_to_trip(RateTest::new(0.05, ALPHA), 3_000);
        assert_eq!(fresh, seasoned, "a CUSUM forgets a healthy past");
    }

    /// Healthy batches (20 requests, no error), then batches at 20 %
    /// errors; the number of bad batches until the trip.
    fn batches_to_trip(mut test: RateTest, healthy: u64) -> u64 {
        for tick in 0..healthy {
            test.add(20, 0, at(tick * 100));
        }
        for bad in 1..1_000 {
            test.add(20, 4, at((healthy + bad) * 100));
            if test.evidence().tripped() {
                return bad;
            }
        }
        panic!("never tripped");
    }

    #[test]
    fn the_evidence_names_when_the_trouble_began_and_what_it_saw() {
        let mut test = RateTest::new(0.05, ALPHA);
        for tick in 0..50 {
            test.add(20, 0, at(tick * 100));
        }
        let mut tick = 50;
        while !test.evidence().tripped() {
            test.add(20, 5, at(tick * 100));
            tick += 1;
        }
        let evidence = test.evidence();
        assert_eq!(evidence.run.since, Some(at(5_000)));
        assert_eq!(evidence.run.marked * 4, evidence.run.trials);
        let estimate = evidence.estimate().expect("counts");
        assert!((estimate.value - 0.25).abs() < 1e-9);
        assert!(estimate.low < 0.25 && estimate.high > 0.25);
        assert_eq!(
            evidence.age(at(tick * 100)),
            Some(Duration::from_millis((tick - 50) * 100))
        );
    }

    #[test]
    fn relative_ignores_an_outage_that_hits_both_pools_alike() {
        let mut test = RelativeTest::new(2.0, ALPHA);
        // A 10 % canary; both pools fail 30 % of requests for a minute.
        for tick in 0..600u64 {
            test.add((20, 6), (180, 54), at(tick * 100));
        }
        assert!(!test.evidence().tripped(), "{:?}", test.evidence());
        assert_eq!(test.candidate, (12_000, 3_600));
    }

    #[test]
    fn relative_trips_when_the_candidate_fails_more() {
        let mut test = RelativeTest::new(2.0, ALPHA);
        let mut tick = 0;
        // Candidate 20 % against a 1 % baseline, 50/50 traffic.
        while !test.evidence().tripped() {
            test.add((20, 4), (20, u64::from(tick % 5 == 0)), at(tick * 100));
            tick += 1;
            assert!(tick < 200, "no trip in 20 s");
        }
    }

    #[test]
    fn relative_learns_nothing_without_baseline_traffic() {
        let mut test = RelativeTest::new(2.0, ALPHA);
        for tick in 0..100 {
            test.add((20, 20), (0, 0), at(tick * 100));
        }
        assert_eq!(test.evidence().statistic, 0.0);
    }

    #[test]
    fn wilson_interval_brackets_the_estimate() {
        let e = Estimate::of(0, 100).expect("counts");
        assert_eq!(e.value, 0.0);
        assert!(e.low == 0.0 && e.high > 0.0 && e.high < 0.05);
        assert!(Estimate::of(0, 0).is_none());
    }
}
