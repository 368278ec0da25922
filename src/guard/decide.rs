//! The guard's decision: a pure function of the figures, the policy and the
//! time, so every rule is unit-tested on made-up windows.

use std::time::Duration;

use crate::config::GuardConfig;
use crate::stats::WindowStats;

/// What the guard sees of the watched pool (and its baseline) right now.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub candidate: &'a WindowStats,
    /// The pool traffic moved away from, for the relative thresholds.
    pub baseline: Option<&'a WindowStats>,
    /// Backends of the candidate that have not failed their health checks.
    pub healthy_backends: usize,
    pub window: Duration,
}

/// A threshold that tripped, with the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    /// Label for metrics and audit: `error_rate`, `p95`, `p99`,
    /// `error_rate_vs_baseline`, `p95_vs_baseline`, `no_healthy_backend`.
    pub threshold: &'static str,
    pub measured: String,
    pub limit: String,
    pub requests: u64,
    pub window: Duration,
}

impl Trip {
    /// One line for the audit record and the webhook.
    pub fn reason(&self, pool: &str) -> String {
        format!(
            "guard: {} of pool {pool} is {} (limit {}) over {} requests in the last {}",
            self.threshold,
            self.measured,
            self.limit,
            self.requests,
            crate::config::format_duration(self.window)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The watch period is over: nothing to judge.
    NotWatching,
    /// Fewer than `min_requests` in the window: no verdict either way.
    Insufficient {
        requests: u64,
        needed: u64,
    },
    /// Enough requests and every threshold holds.
    Pass {
        requests: u64,
    },
    Trip(Trip),
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

/// Judges the watched pool. `watch_started_ms` and `now_ms` are on the same
/// clock; the watch lasts `policy.watch`.
pub fn decide(
    obs: &Observation,
    policy: &GuardConfig,
    watch_started_ms: u64,
    now_ms: u64,
) -> Verdict {
    let watch_ms = u64::try_from(policy.watch.as_millis()).unwrap_or(u64::MAX);
    if now_ms.saturating_sub(watch_started_ms) > watch_ms {
        return Verdict::NotWatching;
    }
    let c = obs.candidate;
    let trip = |threshold, measured: String, limit: String| {
        Verdict::Trip(Trip {
            threshold,
            measured,
            limit,
            requests: c.requests,
            window: obs.window,
        })
    };
    // A pool with nothing left to serve is judged without waiting for requests.
    if obs.healthy_backends == 0 {
        return trip(
            "no_healthy_backend",
            "0 healthy backends".into(),
            "at least 1".into(),
        );
    }
    if c.requests < policy.min_requests {
        return Verdict::Insufficient {
            requests: c.requests,
            needed: policy.min_requests,
        };
    }
    if let Some(max) = policy.max_error_rate {
        if c.error_rate() > max {
            return trip(
                "error_rate",
                format!("{:.2}%", c.error_rate()),
                format!("{max}%"),
            );
        }
    }
    for (label, limit, value) in [
        ("p95", policy.max_p95, c.p95),
        ("p99", policy.max_p99, c.p99),
    ] {
        if let (Some(limit), Some(value)) = (limit, value) {
            if value > limit {
                return trip(label, ms(value), ms(limit));
            }
        }
    }
    if let Some(base) = obs.baseline.filter(|b| b.requests >= policy.min_requests) {
        if let Some(ratio) = policy.max_error_rate_vs_baseline {
            // A clean baseline counts as one error, so the ratio stays finite.
            let floor = 100.0 / base.requests as f64;
            let measured = c.error_rate() / base.error_rate().max(floor);
            if c.errors > 0 && measured > ratio {
                return trip(
                    "error_rate_vs_baseline",
                    format!("{measured:.2}x the baseline's {:.2}%", base.error_rate()),
                    format!("{ratio}x"),
                );
            }
        }
        if let (Some(ratio), Some(cp), Some(bp)) = (policy.max_p95_vs_baseline, c.p95, base.p95) {
            let measured = cp.as_secs_f64() / bp.as_secs_f64().max(1e-6);
            if measured > ratio {
                return trip(
                    "p95_vs_baseline",
                    format!("{measured:.2}x ({} vs {})", ms(cp), ms(bp)),
                    format!("{ratio}x"),
                );
            }
        }
    }
    Verdict::Pass {
        requests: c.requests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn policy(extra: &str) -> GuardConfig {
        let text = format!("[pools.blue]\nbackends = []\n[split]\nblue = 0\n[guard]\n{extra}\n");
        // A pool with no backends cannot take a share; use a valid file.
        let text = text
            .replace("backends = []", "backends = [\"127.0.0.1:1\"]")
            .replace("blue = 0", "blue = 100");
        parse(&text, Path::new("/")).unwrap().guard
    }

    fn window(requests: u64, errors: u64, p95_ms: u64) -> WindowStats {
        WindowStats {
            requests,
            by_class: [requests - errors, 0, 0, errors, 0],
            failures: [0; 7],
            errors,
            p50: Some(Duration::from_millis(p95_ms / 2)),
            p95: Some(Duration::from_millis(p95_ms)),
            p99: Some(Duration::from_millis(p95_ms * 2)),
        }
    }

    fn judge(
        policy: &GuardConfig,
        candidate: &WindowStats,
        baseline: Option<&WindowStats>,
    ) -> Verdict {
        let obs = Observation {
            candidate,
            baseline,
            healthy_backends: 1,
            window: policy.window,
        };
        decide(&obs, policy, 1_000, 2_000)
    }

    #[test]
    fn too_few_requests_give_no_verdict() {
        let p = policy("min_requests = 50");
        assert_eq!(
            judge(&p, &window(49, 49, 5), None),
            Verdict::Insufficient {
                requests: 49,
                needed: 50
            }
        );
    }

    #[test]
    fn error_rate_above_the_limit_trips_with_evidence() {
        let p = policy("max_error_rate = 5.0");
        assert_eq!(
            judge(&p, &window(100, 5, 5), None),
            Verdict::Pass { requests: 100 }
        );
        let Verdict::Trip(trip) = judge(&p, &window(200, 40, 5), None) else {
            panic!()
        };
        assert_eq!(trip.threshold, "error_rate");
        assert_eq!(trip.measured, "20.00%");
        assert_eq!(trip.requests, 200);
        assert_eq!(
            trip.reason("green"),
            "guard: error_rate of pool green is 20.00% (limit 5%) over 200 requests in the last 30s"
        );
    }

    #[test]
    fn latency_limits_trip() {
        let p = policy("max_p95 = \"500ms\"\nmax_p99 = \"1s\"");
        assert!(matches!(
            judge(&p, &window(100, 0, 400), None),
            Verdict::Pass { .. }
        ));
        let Verdict::Trip(t) = judge(&p, &window(100, 0, 800), None) else {
            panic!()
        };
        assert_eq!((t.threshold, t.measured.as_str()), ("p95", "800.0ms"));
        let p = policy("max_p99 = \"1s\"");
        let Verdict::Trip(t) = judge(&p, &window(100, 0, 600), None) else {
            panic!()
        };
        assert_eq!(t.threshold, "p99");
    }

    #[test]
    fn baseline_relative_limits_trip_only_against_a_real_baseline() {
        let p = policy(
            "max_error_rate = 50.0\nmax_error_rate_vs_baseline = 2.0\nmax_p95_vs_baseline = 2.0",
        );
        let base = window(1000, 10, 10); // 1 %
        assert!(matches!(
            judge(&p, &window(100, 1, 10), Some(&base)),
            Verdict::Pass { .. }
        ));
        let Verdict::Trip(t) = judge(&p, &window(100, 3, 10), Some(&base)) else {
            panic!()
        };
        assert_eq!(t.threshold, "error_rate_vs_baseline");
        let Verdict::Trip(t) = judge(&p, &window(100, 0, 25), Some(&base)) else {
            panic!()
        };
        assert_eq!(t.threshold, "p95_vs_baseline");
        // A baseline with too few requests is no baseline.
        let thin = window(10, 0, 1);
        assert!(matches!(
            judge(&p, &window(100, 3, 25), Some(&thin)),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn no_healthy_backend_trips_at_once_and_the_watch_ends() {
        let p = policy("watch = \"10s\"");
        let empty = window(0, 0, 0);
        let obs = Observation {
            candidate: &empty,
            baseline: None,
            healthy_backends: 0,
            window: p.window,
        };
        let Verdict::Trip(t) = decide(&obs, &p, 0, 5_000) else {
            panic!()
        };
        assert_eq!(t.threshold, "no_healthy_backend");
        assert_eq!(decide(&obs, &p, 0, 10_001), Verdict::NotWatching);
    }
}
