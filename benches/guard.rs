//! Guard simulation: how fast a failing candidate is rolled back, and how
//! often a healthy one is, for the sequential tests (`guard::sequential`)
//! and, in the same table, the old rule they replace (a point threshold on
//! the 30 s sliding window, checked every tick: `guard::decide`).
//!
//! Seeded and deterministic. Requests arrive at a fixed rate, each fails
//! with the scenario's probability and takes a log-normal latency (sigma
//! 0.5); a request is counted when it *finishes*, so a slow request is
//! evidence only once it has taken its time. The guard judges every
//! 100 ms, as the judge does. Times are from the moment the candidate
//! changed behaviour to the tick that trips.
//!
//! Run: `cargo bench --bench guard` (about a minute in release).
//! `GUARD_RUNS=N` sets the runs per detection cell (default 2 000).

use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard::clock::MonoMs;
use switchyard::config::{self, GuardConfig};
use switchyard::guard::sequential::{RateTest, RelativeTest};
use switchyard::guard::{decide, Observation, Verdict};
use switchyard::stats::{PoolStats, StatusClass};

const TICK_MS: u64 = 100;
const ALPHA: f64 = 0.001;
const MAX_ERROR_RATE: f64 = 0.05;
const MAX_P95_MS: f64 = 500.0;
const RATIO: f64 = 2.0;

/// How one pool behaves before and after `step_ms`.
#[derive(Clone, Copy)]
struct Behaviour {
    rate: u64,
    errors: (f64, f64),
    /// Median latency in ms, before and after.
    median_ms: (f64, f64),
}

#[derive(Clone, Copy)]
struct Scenario {
    candidate: Behaviour,
    baseline: Option<Behaviour>,
    step_ms: u64,
    until_ms: u64,
    /// Which tests the policy has.
    absolute: bool,
    latency: bool,
    relative: bool,
}

/// Per-tick counts of one pool: requests, errors, slower than `max_p95`.
struct Ticks {
    requests: Vec<u64>,
    errors: Vec<u64>,
    slow: Vec<u64>,
    /// Every request as (finished at ms, failed, latency), in finishing
    /// order: only for the old rule, which records into real `PoolStats`.
    log: Vec<(u64, bool, Duration)>,
}

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen::<f64>().max(1e-300);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn simulate_pool(b: Behaviour, s: &Scenario, rng: &mut StdRng, keep_log: bool) -> Ticks {
    let ticks = (s.until_ms / TICK_MS + 2) as usize;
    let mut t = Ticks {
        requests: vec![0; ticks],
        errors: vec![0; ticks],
        slow: vec![0; ticks],
        log: Vec::new(),
    };
    let gap_us = 1_000_000 / b.rate;
    let mut start_us = 0u64;
    while start_us / 1000 < s.until_ms {
        let start_ms = start_us / 1000;
        let after = start_ms >= s.step_ms;
        let p = if after { b.errors.1 } else { b.errors.0 };
        let median = if after { b.median_ms.1 } else { b.median_ms.0 };
        let failed = rng.gen::<f64>() < p;
        let latency_ms = median * (0.5 * normal(rng)).exp();
        let done_ms = start_ms + latency_ms as u64;
        let tick = (done_ms / TICK_MS) as usize;
        if tick < ticks {
            t.requests[tick] += 1;
            t.errors[tick] += u64::from(failed);
            t.slow[tick] += u64::from(latency_ms > MAX_P95_MS);
        }
        if keep_log {
            t.log.push((
                done_ms,
                failed,
                Duration::from_secs_f64(latency_ms / 1000.0),
            ));
        }
        start_us += gap_us;
    }
    if keep_log {
        t.log.sort_by_key(|e| e.0);
    }
    t
}

/// The sequential tests: the tick (as ms after the step) that trips.
fn new_rule(s: &Scenario, c: &Ticks, b: Option<&Ticks>) -> Option<u64> {
    let mut errors = RateTest::new(MAX_ERROR_RATE, ALPHA);
    let mut slow = RateTest::new(0.05, ALPHA);
    let mut relative = RelativeTest::new(RATIO, ALPHA);
    for tick in 0..c.requests.len() {
        let start = MonoMs(tick as u64 * TICK_MS);
        let now = start.0 + TICK_MS;
        if now > s.until_ms {
            break;
        }
        if s.absolute {
            errors.add(c.requests[tick], c.errors[tick], start);
        }
        if s.latency {
            slow.add(c.requests[tick], c.slow[tick], start);
        }
        if let (true, Some(b)) = (s.relative, b) {
            relative.add(
                (c.requests[tick], c.errors[tick]),
                (b.requests[tick], b.errors[tick]),
                start,
            );
        }
        let tripped = (s.absolute && errors.evidence().tripped())
            || (s.latency && slow.evidence().tripped())
            || (s.relative && relative.evidence().tripped());
        if tripped {
            return Some(now.saturating_sub(s.step_ms));
        }
    }
    None
}

fn old_policy(s: &Scenario) -> GuardConfig {
    let mut text = String::from(
        "[pools.green]\nbackends = [\"127.0.0.1:1\"]\n[guard]\nwindow = \"30s\"\nmin_requests = 50\nwatch = \"10m\"\n",
    );
    // `max_error_rate` defaults to 5 %: a relative-only policy sets it
    // out of reach, as an operator would.
    text.push_str(if s.absolute {
        "max_error_rate = 5.0\n"
    } else {
        "max_error_rate = 100.0\n"
    });
    if s.latency {
        text.push_str("max_p95 = \"500ms\"\n");
    }
    if s.relative {
        text.push_str(&format!("max_error_rate_vs_baseline = {RATIO}\n"));
    }
    config::parse(&text, Path::new("/")).expect("valid").guard
}

/// The old rule: real `PoolStats` windows and `decide` every tick.
fn old_rule(s: &Scenario, c: &Ticks, b: Option<&Ticks>) -> Option<u64> {
    let policy = old_policy(s);
    let stats_c = PoolStats::new(policy.window);
    let stats_b = PoolStats::new(policy.window);
    let (mut ic, mut ib) = (0, 0);
    let record = |stats: &PoolStats, log: &[(u64, bool, Duration)], i: &mut usize, now: u64| {
        while *i < log.len() && log[*i].0 < now {
            let (t, failed, latency) = log[*i];
            let class = if failed {
                StatusClass::S5xx
            } else {
                StatusClass::S2xx
            };
            stats.record(t, class, latency);
            *i += 1;
        }
    };
    let mut now = TICK_MS;
    while now <= s.until_ms {
        record(&stats_c, &c.log, &mut ic, now);
        if let Some(b) = b {
            record(&stats_b, &b.log, &mut ib, now);
        }
        let window = stats_c.window(now);
        let base = b.map(|_| stats_b.window(now));
        let obs = Observation {
            candidate: &window,
            baseline: base.as_ref(),
            healthy_backends: 1,
            window: policy.window,
        };
        if let Verdict::Trip(_) = decide(&obs, &policy, 0, now) {
            return Some(now.saturating_sub(s.step_ms));
        }
        now += TICK_MS;
    }
    None
}

struct Cell {
    tripped: usize,
    runs: usize,
    times: Vec<u64>,
}

impl Cell {
    fn show(&mut self) -> String {
        self.times.sort_unstable();
        let at = |q: f64| self.times[((self.times.len() - 1) as f64 * q).round() as usize];
        if self.times.len() * 2 < self.runs {
            format!("{}/{} tripped", self.tripped, self.runs)
        } else {
            format!(
                "{} / {} ms{}",
                at(0.5),
                at(0.9),
                if self.tripped < self.runs {
                    format!(" ({}/{})", self.tripped, self.runs)
                } else {
                    String::new()
                }
            )
        }
    }
}

fn run_cell(s: &Scenario, runs: usize, old: bool, seed0: u64) -> Cell {
    let mut cell = Cell {
        tripped: 0,
        runs,
        times: Vec::new(),
    };
    for run in 0..runs {
        let mut rng = StdRng::seed_from_u64(seed0 + run as u64);
        let c = simulate_pool(s.candidate, s, &mut rng, old);
        let b = s.baseline.map(|b| simulate_pool(b, s, &mut rng, old));
        let result = if old {
            old_rule(s, &c, b.as_ref())
        } else {
            new_rule(s, &c, b.as_ref())
        };
        if let Some(t) = result {
            cell.tripped += 1;
            cell.times.push(t);
        }
    }
    cell
}

fn healthy(rate: u64) -> Behaviour {
    Behaviour {
        rate,
        errors: (0.001, 0.001),
        median_ms: (5.0, 5.0),
    }
}

fn main() {
    let runs: usize = std::env::var("GUARD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let failing = |errors: f64, step_ms: u64| Scenario {
        candidate: Behaviour {
            errors: (0.001, errors),
            ..healthy(200)
        },
        baseline: None,
        step_ms,
        until_ms: step_ms + 60_000,
        absolute: true,
        latency: true,
        relative: false,
    };
    // p95 from 50 ms to 800 ms: log-normal medians 22 ms and 351 ms.
    let slow = Scenario {
        candidate: Behaviour {
            median_ms: (50.0 / 2.276, 800.0 / 2.276),
            ..healthy(200)
        },
        ..failing(0.001, 0)
    };
    let relative = Scenario {
        candidate: Behaviour {
            errors: (0.001, 0.05),
            ..healthy(200)
        },
        baseline: Some(Behaviour {
            errors: (0.01, 0.01),
            ..healthy(200)
        }),
        absolute: false,
        latency: false,
        relative: true,
        ..failing(0.05, 0)
    };
    // A 10 % canary: the baseline serves nine times as much.
    let relative_canary = Scenario {
        baseline: Some(Behaviour {
            rate: 1_800,
            errors: (0.01, 0.01),
            median_ms: (5.0, 5.0),
        }),
        ..relative
    };
    let cases: [(&str, Scenario, &str); 8] = [
        ("20% errors at the change", failing(0.20, 0), "<= 400 ms"),
        ("10% errors at the change", failing(0.10, 0), "<= 2500 ms"),
        (
            "20% errors 10 s after",
            failing(0.20, 10_000),
            "<= 1.5x at change",
        ),
        (
            "10% errors 10 s after",
            failing(0.10, 10_000),
            "<= 1.5x at change",
        ),
        ("p95 50 -> 800 ms (limit 500)", slow, "<= 500 ms"),
        ("5% vs baseline 1%, ratio 2", relative, "<= 1500 ms"),
        (
            "same, baseline at 1800 req/s",
            relative_canary,
            "<= 1500 ms",
        ),
        (
            "5% vs baseline 1%, 10 s after",
            Scenario {
                step_ms: 10_000,
                until_ms: 70_000,
                ..relative
            },
            "",
        ),
    ];
    println!("Detection, candidate at 200 req/s, alpha {ALPHA}, limits 5% errors / p95 500 ms; median / p90 from the change ({runs} runs a cell)\n");
    println!(
        "| {:<30} | {:>22} | {:>22} | {:<18} |",
        "scenario", "sequential (new)", "30 s window (old)", "target"
    );
    println!("|{:-<32}|{:-<24}|{:-<24}|{:-<20}|", "", "", "", "");
    for (i, (name, s, target)) in cases.iter().enumerate() {
        let mut new = run_cell(s, runs, false, 1_000 * i as u64);
        let mut old = run_cell(s, runs, true, 1_000 * i as u64);
        println!(
            "| {name:<30} | {:>22} | {:>22} | {target:<18} |",
            new.show(),
            old.show()
        );
    }

    // Healthy 10-minute watches at half of every limit: 2.5 % errors and
    // 2.5 % of requests slower than 500 ms (log-normal median 188 ms).
    let watches: usize = std::env::var("GUARD_WATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let old_watches = watches / 10;
    println!("\nFalse rollbacks in healthy 10-minute watches (new: {watches} watches a cell; old: {old_watches}, it is 100x slower to simulate)\n");
    println!(
        "| {:<44} | {:>12} | {:>12} | {:>12} |",
        "healthy pool", "50 req/s", "200 req/s", "1000 req/s"
    );
    println!("|{:-<46}|{:-<14}|{:-<14}|{:-<14}|", "", "", "", "");
    let half = |rate| Scenario {
        candidate: Behaviour {
            rate,
            errors: (0.025, 0.025),
            median_ms: (187.6, 187.6),
        },
        baseline: None,
        step_ms: 0,
        until_ms: 600_000,
        absolute: true,
        latency: true,
        relative: false,
    };
    let both_step = |rate| Scenario {
        candidate: Behaviour {
            errors: (0.005, 0.08),
            ..healthy(rate)
        },
        baseline: Some(Behaviour {
            errors: (0.005, 0.08),
            ..healthy(rate)
        }),
        step_ms: 60_000,
        until_ms: 600_000,
        absolute: false,
        latency: false,
        relative: true,
    };
    for (name, make, old) in [
        (
            "half the limits, errors + p95 (new)",
            &half as &dyn Fn(u64) -> Scenario,
            false,
        ),
        ("half the limits, errors + p95 (old)", &half, true),
        (
            "both pools step to 8%, relative only (new)",
            &both_step,
            false,
        ),
        (
            "both pools step to 8%, relative only (old)",
            &both_step,
            true,
        ),
    ] {
        let n = if old { old_watches } else { watches };
        let row: Vec<String> = [50u64, 200, 1000]
            .iter()
            .map(|&rate| {
                let cell = run_cell(&make(rate), n, old, 77_000 + rate);
                format!("{} / {}", cell.tripped, n)
            })
            .collect();
        println!(
            "| {name:<44} | {:>12} | {:>12} | {:>12} |",
            row[0], row[1], row[2]
        );
    }
}
