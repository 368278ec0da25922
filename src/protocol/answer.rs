//! Every answer of the admin socket (and `GET /status`) and the webhook
//! event body, as types: the server builds them, `ctl` reads them back, so
//! a field is named once for both sides. The JSON shape is the contract
//! (SPEC §4, §8): fields may be added, never renamed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A split on the wire: pool → percent (0.01 % steps).
pub type SplitDoc = BTreeMap<String, f64>;

/// A refused command: `{"ok":false,"kind":"…","error":"…"}`. `kind` names
/// the class of refusal for scripts; `error` is the message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub ok: bool,
    /// Absent from servers older than the kinds.
    #[serde(default)]
    pub kind: String,
    pub error: String,
}

impl Refused {
    pub fn new(kind: &str, error: impl Into<String>) -> Refused {
        Refused {
            ok: false,
            kind: kind.to_string(),
            error: error.into(),
        }
    }
}

/// A change that went into force (split, cutover, rollback, drain, undo,
/// guard pause/resume, canary commands).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub ok: bool,
    pub revision: u64,
    pub split: SplitDoc,
    pub message: String,
}

/// The answer to `reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reloaded {
    pub ok: bool,
    pub changed: bool,
    pub revision: u64,
    /// The split after the reload (only when it changed something).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitDoc>,
    pub message: String,
    /// Settings the file changed that only a restart puts in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

/// The answer to `reopen-logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsReopened {
    pub ok: bool,
    /// The file reopened; `null` without an access log file.
    pub reopened: Option<String>,
    pub message: String,
}

/// One audit record: a line of `audit.log` and an entry of `history`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub revision: u64,
    pub command: String,
    /// `admin`, `file`, `signal`, `startup`, `guard`, `canary`.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub reason: String,
    /// The split in force after this revision.
    pub split: SplitDoc,
    /// Fleet mode: the member name of the instance that made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The answer to `history [N]`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub ok: bool,
    pub history: Vec<AuditRecord>,
}

/// The routing table's part of `status`, which is all `GET /status` shows;
/// the `status` command adds [`ControlStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Which process answered: during a binary upgrade, old or new.
    pub pid: u32,
    pub revision: u64,
    pub split: SplitDoc,
    /// The guard window the figures cover, e.g. `30s`.
    pub window: String,
    pub pools: Vec<PoolStatus>,
    /// `[mirror]`: the copies' record (absent without a mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorStatus>,
    #[serde(flatten)]
    pub control: Option<ControlStatus>,
    /// Fleet mode only: this instance's link to the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// Fleet mode (SPEC §9): this instance's view of the fleet, in `status`
/// and `ctl cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This instance's member name.
    pub name: String,
    /// etcd answered the last call (or the watch stream is up).
    pub connected: bool,
    /// The leader's member name, when known.
    pub leader: Option<String>,
    pub is_leader: bool,
    /// The newest revision of the fleet's state this instance has seen in
    /// etcd (ahead of `applied_revision` only for a moment).
    pub fleet_revision: u64,
    /// The revision of the state in force here.
    pub applied_revision: u64,
    /// Changes made here while etcd was unreachable (`rollback`, the
    /// guard), to be written back when it answers again.
    pub pending_writeback: usize,
    /// Why etcd is not usable (unreachable, TLS, refused credentials),
    /// while it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One member under `{prefix}/members/` as `ctl cluster` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub address: Option<String>,
    pub applied_revision: Option<u64>,
    /// Fleet revision less the member's applied revision.
    pub lag: Option<u64>,
    /// Milliseconds since the member last published.
    pub last_seen_ms: Option<u64>,
    /// Its key is alive but it has not published for longer than the
    /// leader's bound: its counts are left out of the guard's decisions.
    #[serde(default)]
    pub stale: bool,
}

/// The answer to `cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterAnswer {
    pub ok: bool,
    pub cluster: ClusterStatus,
    pub members: Vec<MemberStatus>,
    /// Why the member list is missing or stale (etcd unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The mirror pool's copies (SPEC §11), apart from its own traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub pool: String,
    pub percent: f64,
    pub methods: Vec<String>,
    pub max_body: u64,
    /// RFC 3339: when mirroring to this pool began (the counts' start).
    pub since: String,
    /// Copies answered since then, and those that failed (5xx or no answer).
    pub copies: u64,
    pub errors: u64,
    /// Percent, two decimals.
    pub error_rate: f64,
    /// Copies by class (`2xx` … `5xx`, `error`), since the mirror began.
    pub classes: BTreeMap<String, u64>,
    /// The copies over the guard window, latency included.
    pub window: WindowFigures,
    /// Copies not sent: by reason (`queue_full`).
    pub dropped: BTreeMap<String, u64>,
    /// Requests chosen but not copied: by reason (`body_too_large`,
    /// `body_not_buffered`).
    pub skipped: BTreeMap<String, u64>,
    /// `failing` (the guard's error-rate test tripped on the copies:
    /// `cutover`/`canary start` to the pool are refused without --force),
    /// `passing`, `insufficient` (fewer than `min_requests` copies) or
    /// `untested` (no `max_error_rate`).
    pub verdict: String,
    /// The error-rate test's statistic and bound (absent when untested).
    pub statistic: Option<f64>,
    pub bound: Option<f64>,
}

/// What the controller knows beyond the table: where the config lives, the
/// rollback target, the guard and a canary run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlStatus {
    pub ok: bool,
    pub config: String,
    pub rollback_target: Option<TargetStatus>,
    pub guard: GuardStatus,
    pub canary: Option<CanaryStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub share: f64,
    pub backends: Vec<BackendStatus>,
    pub window: WindowFigures,
    /// The pool's `{ dns = … }` backends and what their lookups found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsStatus>,
}

/// One `{ dns = "NAME:PORT" }` backend: its addresses in force (each also
/// a backend of the pool) and its last lookups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// As written: `green.internal:8080`.
    pub name: String,
    pub addresses: Vec<String>,
    /// RFC 3339 time of the last lookup that succeeded; `None`: never yet.
    pub resolved_at: Option<String>,
    pub resolved_ago_s: Option<f64>,
    /// The failure of the lookups failing now (the addresses are the last
    /// good set), with the time they began failing.
    pub last_error: Option<String>,
    pub failing_since: Option<String>,
    /// Answers that changed the set, and failed lookups, since start.
    pub changes: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// The backend as configured (name or address).
    pub addr: String,
    pub weight: u32,
    pub healthy: bool,
    /// `up`, `down`, `unknown`, `ejected`.
    pub health: String,
    pub drained: bool,
    /// The `{ dns = … }` backend this address was discovered for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
}

/// One pool's figures over the guard window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowFigures {
    pub requests: u64,
    pub errors: u64,
    /// Percent, two decimals.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Answers by class (`2xx` … `5xx`, `error`).
    pub classes: BTreeMap<String, u64>,
    /// Failed upstream attempts by kind (kinds with none left out).
    pub upstream_failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub split: SplitDoc,
    /// The revision whose change made this the target.
    pub revision: u64,
    pub age_s: u64,
    /// Older than `guard.rollback_target_ttl`: `rollback` refuses it.
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStatus {
    pub enabled: bool,
    pub paused: bool,
    pub window: String,
    pub watching: Option<Watching>,
    pub verdict: Option<VerdictStatus>,
    /// The watched pool's figures.
    pub figures: Option<WindowFigures>,
    /// `rollback` or `observe`.
    #[serde(default)]
    pub mode: String,
    /// The sequential tests of the watch in force.
    #[serde(default)]
    pub tests: Vec<TestStatus>,
    /// The candidate's requests and errors since the watch began.
    #[serde(default)]
    pub watch_requests: u64,
    #[serde(default)]
    pub watch_errors: u64,
    #[serde(default)]
    pub last_decision: Option<LastDecision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watching {
    pub pool: String,
    /// The pool the relative limits compare with.
    pub baseline: Option<String>,
    pub remaining_s: u64,
}

/// The guard's latest verdict on the watched pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum VerdictStatus {
    Pass {
        requests: u64,
    },
    Insufficient {
        requests: u64,
        needed: u64,
    },
    Trip {
        threshold: String,
        measured: String,
        limit: String,
        requests: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryStatus {
    pub pool: String,
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    pub weight: Option<f64>,
    pub hold_remaining_s: f64,
    pub paused: bool,
    /// What the step waits for before it advances, in a sentence
    /// (`null` when it can advance).
    #[serde(default)]
    pub waiting_for: Option<String>,
}

/// Any answer a command gets; serialized as the inner answer alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    History(History),
    Applied(Applied),
    Reloaded(Reloaded),
    LogsReopened(LogsReopened),
    Cluster(Box<ClusterAnswer>),
}

/// The body of a webhook POST (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `start`, `split`, `cutover`, `rollback`, `canary_step`, … .
    pub event: String,
    pub revision: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub split: SplitDoc,
    pub reason: String,
    pub origin: String,
    /// The pool the event is about (the candidate of a guard decision, the
    /// pool of a canary event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// What the guard saw: on `rollback` by the guard and on
    /// `guard_would_rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardEvidence>,
}

impl Event {
    /// An event with no pool or evidence attached.
    pub fn plain(
        event: &str,
        revision: u64,
        time: String,
        split: SplitDoc,
        reason: String,
        origin: &str,
    ) -> Event {
        Event {
            event: event.to_string(),
            revision,
            time,
            split,
            reason,
            origin: origin.to_string(),
            pool: None,
            guard: None,
        }
    }
}

/// One sequential test's evidence, for the webhook, `status` and the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardEvidence {
    /// `error_rate`, `p95`, `p99`, `error_rate_vs_baseline`,
    /// `p95_vs_baseline`, `no_healthy_backend`.
    pub test: String,
    /// The candidate's requests and marked requests (failed, or slower than
    /// the limit) since its statistic last left zero.
    pub requests: u64,
    pub marked: u64,
    /// Marked over requests, with a 95 % Wilson interval (fractions).
    pub estimate: Option<f64>,
    pub estimate_low: Option<f64>,
    pub estimate_high: Option<f64>,
    /// The rate allowed (a fraction), or the ratio for a relative test.
    pub limit: f64,
    /// The CUSUM statistic and the bound it is compared with (trip at >=).
    pub statistic: f64,
    pub bound: f64,
    /// Seconds from the first batch of this evidence to the decision.
    pub since_first_bad_s: Option<f64>,
    /// The baseline and its counts since the watch began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default)]
    pub baseline_requests: u64,
    #[serde(default)]
    pub baseline_errors: u64,
    /// The candidate's counts since the watch began.
    #[serde(default)]
    pub watch_requests: u64,
    #[serde(default)]
    pub watch_errors: u64,
}

/// The guard's last rollback (or, in observe mode, the one it would have
/// made).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDecision {
    /// RFC 3339.
    pub time: String,
    pub pool: String,
    /// `rollback` or `guard_would_rollback`.
    pub action: String,
    pub reason: String,
    pub evidence: Option<GuardEvidence>,
}

/// Where one test of the watch stands (`status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestStatus {
    pub test: String,
    /// Statistic over bound: 1.0 = trip.
    pub evidence: f64,
    pub statistic: f64,
    pub bound: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn figures() -> WindowFigures {
        WindowFigures {
            requests: 3,
            errors: 0,
            error_rate: 0.0,
            p50_ms: Some(1.5),
            p95_ms: None,
            p99_ms: None,
            classes: [("2xx".to_string(), 3)].into(),
            upstream_failures: BTreeMap::new(),
        }
    }

    #[test]
    fn a_table_status_has_no_control_fields_and_reads_back() {
        let status = Status {
            pid: 7,
            revision: 2,
            split: [("blue".to_string(), 100.0)].into(),
            window: "30s".into(),
            pools: vec![],
            mirror: None,
            control: None,
            cluster: None,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert!(value.get("guard").is_none() && value.get("ok").is_none());
        let back: Status = serde_json::from_value(value).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn the_status_command_keeps_its_shape() {
        let status = Status {
            pid: 7,
            revision: 2,
            split: [("blue".to_string(), 100.0)].into(),
            window: "30s".into(),
            pools: vec![],
            mirror: None,
            control: Some(ControlStatus {
                ok: true,
                config: "/etc/switchyard.toml".into(),
                rollback_target: None,
                guard: GuardStatus {
                    enabled: true,
                    paused: false,
                    window: "30s".into(),
                    watching: None,
                    verdict: Some(VerdictStatus::Insufficient {
                        requests: 1,
                        needed: 50,
                    }),
                    figures: Some(figures()),
                    mode: "rollback".into(),
                    tests: vec![],
                    watch_requests: 1,
                    watch_errors: 0,
                    last_decision: None,
                },
                canary: None,
            }),
            cluster: None,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(value["ok"], true);
        assert_eq!(value["rollback_target"], Value::Null);
        assert_eq!(value["canary"], Value::Null);
        assert_eq!(
            value["guard"]["verdict"],
            json!({ "verdict": "insufficient", "requests": 1, "needed": 50 })
        );
        assert_eq!(value["guard"]["figures"]["p95_ms"], Value::Null);
        let back: Status = serde_json::from_value(value).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn refusals_and_reloads_read_back() {
        let refused = Refused::new("no_such_pool", "no such pool \"purple\"");
        let value = serde_json::to_value(&refused).unwrap();
        assert_eq!(
            value,
            json!({ "ok": false, "kind": "no_such_pool", "error": "no such pool \"purple\"" })
        );
        let unchanged = Reloaded {
            ok: true,
            changed: false,
            revision: 1,
            split: None,
            message: "config unchanged".into(),
            restart_needed: vec![],
        };
        assert_eq!(
            serde_json::to_value(Answer::Reloaded(unchanged)).unwrap(),
            json!({ "ok": true, "changed": false, "revision": 1, "message": "config unchanged" })
        );
    }
}
