//! The status document: the table's part is what `GET /status` serves; the
//! `status` command adds the controller's part (rollback target, guard,
//! canary). Built from values passed in, time included, so one shape is
//! assembled in one place.

use std::path::Path;
use std::time::Duration;

use crate::clock::Now;
use crate::config::{format_duration, Config};
use crate::guard::canary::CanaryRun;
use crate::guard::Verdict;
use crate::protocol::answer::{
    BackendStatus, CanaryStatus, ControlStatus, DnsStatus, GuardStatus, LogsReopened, MirrorStatus,
    PoolStatus, Status, TargetStatus, TestStatus, VerdictStatus, Watching, WindowFigures,
};
use crate::routing::{DnsEntry, RoutingTable};
use crate::stats::{FailureKind, StatusClass, WindowStats};

use super::audit::rfc3339;
use super::error::Refusal;
use super::judge_state::JudgeState;
use super::state::{split_doc, RuntimeState};
use super::transition::expired;

/// Milliseconds with microsecond precision.
fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_micros() as f64) / 1000.0)
}

/// The figures of one pool over the guard window.
pub fn window_figures(w: &WindowStats) -> WindowFigures {
    WindowFigures {
        requests: w.requests,
        errors: w.errors,
        error_rate: (w.error_rate() * 100.0).round() / 100.0,
        p50_ms: millis(w.p50),
        p95_ms: millis(w.p95),
        p99_ms: millis(w.p99),
        classes: StatusClass::ALL
            .iter()
            .map(|c| (c.label().to_string(), w.count(*c)))
            .collect(),
        upstream_failures: FailureKind::ALL
            .iter()
            .filter(|k| w.failures_of(**k) > 0)
            .map(|k| (k.label().to_string(), w.failures_of(*k)))
            .collect(),
    }
}

/// Revision, split, pools with their backends and windowed figures at `now`.
pub fn table_status(table: &RoutingTable, now: Now) -> Status {
    let pools = table
        .pools
        .iter()
        .map(|pool| PoolStatus {
            name: pool.name.clone(),
            share: pool.share.percent(),
            backends: pool
                .backends
                .iter()
                .map(|b| BackendStatus {
                    addr: b.name.clone(),
                    weight: b.weight,
                    healthy: b.health.is_up(),
                    health: b.health.state_label().to_string(),
                    drained: b.drained,
                    dns: b.dns.clone(),
                })
                .collect(),
            window: window_figures(&pool.stats.window(now.mono.0)),
            dns: pool.dns.iter().map(|d| dns_status(d, now)).collect(),
        })
        .collect();
    Status {
        pid: std::process::id(),
        revision: table.revision,
        split: split_doc(&table.split),
        window: format_duration(table.config.guard.window),
        pools,
        mirror: mirror_status(table, now),
        control: None,
        cluster: None,
    }
}

/// The copies of `[mirror]`, if there is one.
fn mirror_status(table: &RoutingTable, now: Now) -> Option<MirrorStatus> {
    use crate::mirror::route::{Dropped, Skipped};
    use crate::mirror::verdict::{judge, Mirrored};
    let route = table.mirror.as_ref()?;
    let stats = &route.stats;
    let evidence = stats.evidence();
    let totals = stats.copies.totals();
    let verdict = match (judge(table, &route.config.pool), &evidence.test) {
        (Mirrored::Failing(_), _) => "failing",
        (_, None) => "untested",
        _ if evidence.copies < table.config.guard.min_requests => "insufficient",
        _ => "passing",
    };
    let since_ms = stats
        .since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Some(MirrorStatus {
        pool: route.config.pool.clone(),
        percent: route.config.percent.percent(),
        methods: route.config.methods.clone(),
        max_body: route.max_body as u64,
        since: rfc3339(crate::clock::WallMs(since_ms)),
        copies: evidence.copies,
        errors: evidence.errors,
        error_rate: if evidence.copies == 0 {
            0.0
        } else {
            (evidence.errors as f64 * 10_000.0 / evidence.copies as f64).round() / 100.0
        },
        classes: StatusClass::ALL
            .iter()
            .map(|c| (c.label().to_string(), totals.by_class[*c as usize]))
            .collect(),
        window: window_figures(&stats.copies.window(now.mono.0)),
        dropped: Dropped::ALL
            .iter()
            .map(|d| (d.label().to_string(), stats.dropped(*d)))
            .collect(),
        skipped: Skipped::ALL
            .iter()
            .map(|k| (k.label().to_string(), stats.skipped(*k)))
            .collect(),
        verdict: verdict.to_string(),
        statistic: evidence.test.as_ref().map(|t| t.statistic),
        bound: evidence.test.as_ref().map(|t| t.bound),
    })
}

/// One `dns` backend: addresses in force and its lookups' record.
fn dns_status(entry: &DnsEntry, now: Now) -> DnsStatus {
    let record = entry.lookups.record();
    DnsStatus {
        name: entry.name.clone(),
        addresses: entry.addrs.iter().map(|a| a.to_string()).collect(),
        resolved_at: record.resolved_at.map(rfc3339),
        resolved_ago_s: record
            .resolved_at
            .map(|at| now.wall.since(at).as_secs_f64()),
        last_error: record.last_error,
        failing_since: record.failing_since.map(rfc3339),
        changes: record.changes,
        failures: record.failures,
    }
}

/// What the controller holds that `status` shows.
pub struct Held<'a> {
    pub config: &'a Config,
    pub config_path: &'a Path,
    pub state: &'a RuntimeState,
    pub canary: Option<&'a CanaryRun>,
    pub judge: &'a JudgeState,
}

/// The `status` command's answer: the table's part and the controller's.
pub fn status(table: &RoutingTable, held: &Held, now: Now) -> Status {
    let mut status = table_status(table, now);
    let rollback_target = held.state.rollback_target.as_ref().map(|t| TargetStatus {
        split: split_doc(&t.split),
        revision: t.revision,
        age_s: now.wall.0.saturating_sub(t.set_at_ms) / 1000,
        expired: expired(held.config, t, now.wall),
    });
    let judge = held.judge;
    let canary = held.canary.map(|run| {
        let steps = &held.config.canary.steps;
        let hold = steps.get(run.step).and_then(|s| s.hold).unwrap_or_default();
        let held = run.held(now.mono.0);
        CanaryStatus {
            pool: run.pool.clone(),
            step: run.step + 1,
            steps: steps.len(),
            weight: steps.get(run.step).map(|s| s.weight.percent()),
            hold_remaining_s: hold.saturating_sub(held).as_secs_f64(),
            paused: run.paused,
            waiting_for: judge.waiting_for.clone(),
        }
    });
    status.control = Some(ControlStatus {
        ok: true,
        config: held.config_path.display().to_string(),
        rollback_target,
        guard: guard(table, held, now),
        canary,
    });
    status
}

fn guard(table: &RoutingTable, held: &Held, now: Now) -> GuardStatus {
    let guard = &held.config.guard;
    let watch = held.state.watch.as_ref();
    let watching = watch.map(|w| {
        let elapsed = Duration::from_millis(now.wall.0.saturating_sub(w.since_ms));
        Watching {
            pool: w.pool.clone(),
            baseline: w.baseline.clone(),
            remaining_s: guard.watch.saturating_sub(elapsed).as_secs(),
        }
    });
    let verdict = match held.judge.verdict.as_ref() {
        Some(Verdict::Pass { requests }) => Some(VerdictStatus::Pass {
            requests: *requests,
        }),
        Some(Verdict::Insufficient { requests, needed }) => Some(VerdictStatus::Insufficient {
            requests: *requests,
            needed: *needed,
        }),
        Some(Verdict::Trip(trip)) => Some(VerdictStatus::Trip {
            threshold: trip.threshold.to_string(),
            measured: trip.measured.clone(),
            limit: trip.limit.clone(),
            requests: trip.requests,
        }),
        Some(Verdict::NotWatching) | None => None,
    };
    let figures = watch.and_then(|w| {
        table
            .pool(&w.pool)
            .map(|p| window_figures(&p.stats.window(now.mono.0)))
    });
    let tests = held.judge.tests.as_ref();
    GuardStatus {
        enabled: guard.enabled,
        paused: held.state.guard_paused,
        window: format_duration(guard.window),
        watching,
        verdict,
        figures,
        mode: guard.mode.label().to_string(),
        tests: tests
            .map(|t| {
                t.tests()
                    .iter()
                    .map(|s| TestStatus {
                        test: s.test.to_string(),
                        evidence: s.evidence.ratio(),
                        statistic: s.evidence.statistic,
                        bound: s.evidence.bound,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        watch_requests: tests.map_or(0, |t| t.candidate.requests),
        watch_errors: tests.map_or(0, |t| t.candidate.errors),
        last_decision: held.judge.last_decision.clone(),
    }
}

/// `reopen-logs` (and SIGUSR1, in `access_log::writer`): the access log
/// file is opened again by its path, as logrotate expects after a rename.
pub(super) fn reopen_logs() -> Result<LogsReopened, Refusal> {
    let reopened = crate::access_log::writer::reopen()?;
    let message = match &reopened {
        Some(path) => format!("reopened {}", path.display()),
        None => "no access log file to reopen (none configured, or stderr)".to_string(),
    };
    Ok(LogsReopened {
        ok: true,
        reopened: reopened.map(|p| p.display().to_string()),
        message,
    })
}

impl super::controller::Controller {
    /// The answer to a change: the revision and split in force, and what
    /// was done.
    pub(super) fn applied(
        inner: &super::controller::Inner,
        message: &str,
    ) -> crate::protocol::answer::Applied {
        crate::protocol::answer::Applied {
            ok: true,
            revision: inner.state.revision,
            split: split_doc(&inner.state.split),
            message: message.to_string(),
        }
    }
}
