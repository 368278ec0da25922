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
    #[serde(flatten)]
    pub control: Option<ControlStatus>,
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
}

/// Any answer a command gets; serialized as the inner answer alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    History(History),
    Applied(Applied),
    Reloaded(Reloaded),
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
            control: None,
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
                },
                canary: None,
            }),
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
