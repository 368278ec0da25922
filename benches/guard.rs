//! Guard simulation: how fast the guard rolls back a pool that starts
//! failing, and how often it rolls back a healthy one by mistake.
//!
//! Runs the real statistics (`PoolStats`) and the real decision (`decide`)
//! on a simulated clock: requests arrive at a fixed rate, each fails with
//! the scenario's probability and takes a log-normal latency; the guard
//! judges every 100 ms, like the evaluator. Deterministic (seeded).
//!
//! Run: `cargo bench --bench guard`

use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard::config::{self, GuardConfig};
use switchyard::guard::{decide, Observation, Verdict};
use switchyard::stats::{PoolStats, StatusClass};

const TICK_MS: u64 = 100;
const SEEDS: u64 = 20;

fn policy() -> GuardConfig {
    let text = "[pools.green]\nbackends = [\"127.0.0.1:1\"]\n[guard]\nwindow = \"30s\"\nmin_requests = 50\nmax_error_rate = 5.0\nmax_p95 = \"500ms\"\nwatch = \"10m\"\n";
    config::parse(text, Path::new("/")).expect("valid").guard
}

/// Log-normal latency around `median_ms` (sigma 0.5: p95 ≈ 2.3× median).
fn latency(rng: &mut StdRng, median_ms: f64) -> Duration {
    let normal: f64 = (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0;
    Duration::from_secs_f64(median_ms * (0.5 * normal).exp() / 1000.0)
}

/// Simulates one pool; returns the time of the first trip after `step_at_ms`
/// (or any trip at all when `error_after` is the healthy rate), within `until_ms`.
fn simulate(
    policy: &GuardConfig,
    rate: u64,
    error_before: f64,
    error_after: f64,
    step_at_ms: u64,
    until_ms: u64,
    seed: u64,
) -> Option<u64> {
    let stats = PoolStats::new(policy.window);
    let mut rng = StdRng::seed_from_u64(seed);
    let gap_us = 1_000_000 / rate;
    let mut next_request_us = 0u64;
    let mut now_ms = 0u64;
    while now_ms <= until_ms {
        now_ms += TICK_MS;
        while next_request_us / 1000 < now_ms {
            let t = next_request_us / 1000;
            let p = if t < step_at_ms {
                error_before
            } else {
                error_after
            };
            let class = if rng.gen::<f64>() < p {
                StatusClass::S5xx
            } else {
                StatusClass::S2xx
            };
            stats.record(t, class, latency(&mut rng, 5.0));
            next_request_us += gap_us;
        }
        let window = stats.window(now_ms);
        let obs = Observation {
            candidate: &window,
            baseline: None,
            healthy_backends: 1,
            window: policy.window,
        };
        if let Verdict::Trip(_) = decide(&obs, policy, 0, now_ms) {
            return Some(now_ms.saturating_sub(step_at_ms));
        }
    }
    None
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let policy = policy();
    // Failing from the cutover on (a bad release), and failing 10 s after
    // it (healthy history in the window dilutes the error rate).
    for healthy_before_ms in [0u64, 10_000] {
        println!(
            "guard detection time after the error rate steps up, {healthy_before_ms} ms after the cutover \
             (window 30s, min_requests 50, max_error_rate 5%, tick {TICK_MS} ms, {SEEDS} seeds; median / p90 / max)"
        );
        println!(
            "{:>10} | {:>22} {:>22} {:>22}",
            "error step", "50 req/s", "200 req/s", "1000 req/s"
        );
        for step in [0.01, 0.05, 0.20, 1.00] {
            let mut row = format!("{:>9.0}% |", step * 100.0);
            for rate in [50u64, 200, 1000] {
                let mut times: Vec<u64> = Vec::new();
                for seed in 0..SEEDS {
                    let until = healthy_before_ms + 60_000;
                    if let Some(t) =
                        simulate(&policy, rate, 0.001, step, healthy_before_ms, until, seed)
                    {
                        times.push(t);
                    }
                }
                times.sort_unstable();
                let cell = match times.len() as u64 {
                    0 => "no rollback".to_string(),
                    n if n < SEEDS => format!("{n}/{SEEDS} rolled back"),
                    _ => format!(
                        "{} / {} / {} ms",
                        percentile(&times, 0.5),
                        percentile(&times, 0.9),
                        times[times.len() - 1]
                    ),
                };
                row.push_str(&format!(" {cell:>22}"));
            }
            println!("{row}");
        }
        println!();
    }

    // False rollbacks: healthy pools (0.5 % background errors, 5 ms median
    // latency) watched for 2 minutes each.
    const RUNS: u64 = 300;
    println!("\nfalse rollbacks over {RUNS} healthy 2-minute watches (0.5% background errors, log-normal latency):");
    for rate in [50u64, 200, 1000] {
        let tripped = (0..RUNS)
            .filter(|seed| {
                simulate(&policy, rate, 0.005, 0.005, 0, 120_000, 1_000 + seed).is_some()
            })
            .count();
        println!(
            "  {rate:>5} req/s: {tripped} of {RUNS} ({:.2}%)",
            tripped as f64 * 100.0 / RUNS as f64
        );
    }
}
