//! Refusals: every reason the controller says no, as one type. Each has a
//! [`Refusal::kind`] that reaches the answer (`{"ok":false,"kind":…}`), so
//! scripts tell "the command is wrong" from "try again in a moment" without
//! reading the message; the message is the one operators (and the README)
//! have always seen.

use std::path::PathBuf;

use crate::config::Share;
use crate::protocol::answer::Refused;
use crate::protocol::ParseError;

/// Why a split cannot be put in force with the config in force.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitProblem {
    #[error("no such pool \"{0}\"")]
    NoSuchPool(String),
    #[error("shares sum to {0}, must be 100")]
    BadSum(Share),
    #[error("pool \"{0}\" has no backends")]
    NoBackends(String),
}

impl SplitProblem {
    pub fn kind(&self) -> &'static str {
        match self {
            SplitProblem::NoSuchPool(_) => "no_such_pool",
            SplitProblem::BadSum(_) => "bad_split",
            SplitProblem::NoBackends(_) => "empty_pool",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Not a command: unparsable, not UTF-8, too long.
    #[error("{0}")]
    BadRequest(String),
    #[error("no such pool \"{0}\"")]
    NoSuchPool(String),
    #[error("pool \"{pool}\" has no backend \"{backend}\"")]
    NoSuchBackend { pool: String, backend: String },
    #[error("no revision {0} in the audit log")]
    NoSuchRevision(u64),
    #[error("revision {revision} names pool \"{pool}\", which no longer exists")]
    RevisionPoolGone { revision: u64, pool: String },
    /// The audit record of a revision holds a share that does not parse.
    #[error("{0}")]
    BadRecord(String),
    #[error(transparent)]
    Split(SplitProblem),
    #[error("cannot restore the rollback target: {0}")]
    TargetUnusable(SplitProblem),
    #[error("cannot restore revision {revision}: {problem}")]
    RevisionUnusable {
        revision: u64,
        problem: SplitProblem,
    },
    #[error("pool {pool} has no usable backend ({why}); add --force to do it anyway")]
    DeadPool { pool: String, why: String },
    /// The pool's mirrored copies fail the guard's error-rate test.
    #[error("{0}; add --force to do it anyway")]
    MirrorFailing(crate::mirror::verdict::Failing),
    #[error(
        "{backend} is the last usable backend of pool {pool}, which has a {share}% share: \
         every request to {pool} would get 503; add --force to drain it anyway"
    )]
    LastBackend {
        pool: String,
        backend: String,
        share: f64,
    },
    #[error(
        "this process is handing over to its successor (binary upgrade): \
                        send the command again in a moment"
    )]
    HandingOver,
    #[error("change refused: cannot save state in {}: {source}", .dir.display())]
    Persist {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("nothing to roll back to: no change has raised a pool's share")]
    NothingToRollBack,
    #[error("the rollback target (revision {0}) is older than guard.rollback_target_ttl")]
    TargetExpired(u64),
    #[error("no canary is running")]
    NoCanary,
    #[error("no canary steps configured")]
    NoCanarySteps,
    #[error("a canary of {0} is already running")]
    CanaryRunning(String),
    /// The command asks for the state already in force (drained, paused…).
    #[error("{0}")]
    Unchanged(String),
    #[error("config rejected, the running config stays:\n{0}")]
    ConfigRejected(String),
    #[error(transparent)]
    ReopenLogs(#[from] crate::access_log::writer::ReopenError),
    /// Fleet mode: another instance committed a change first; this one
    /// was planned on the state before it and is refused whole.
    #[error(
        "refused: {by} changed the fleet's state first (now revision {revision}; this change \
         was planned on revision {planned_on}); check `status` and send it again if it still applies"
    )]
    FleetConflict {
        by: String,
        revision: u64,
        planned_on: u64,
    },
    /// Fleet mode: the leader's automation wrote after losing the lead.
    #[error(
        "refused by etcd: this instance no longer holds the leadership (its election key is gone)"
    )]
    NotLeader,
    /// Fleet mode: etcd does not answer, and this command could give a pool
    /// more traffic, which only the fleet may decide.
    #[error(
        "etcd is unreachable ({0}): this instance serves its last state and refuses changes that \
         could give a pool more traffic; `rollback`, `drain` and `canary abort|pause` still act \
         here and are written back when etcd answers"
    )]
    ClusterUnreachable(String),
    /// `cluster` on an instance without `[cluster]`.
    #[error("no [cluster] section: this instance is not in a fleet")]
    NotInFleet,
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The class of refusal, for scripts and `ctl`.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NoSuchPool(_) | Refusal::RevisionPoolGone { .. } => "no_such_pool",
            Refusal::NoSuchBackend { .. } => "no_such_backend",
            Refusal::NoSuchRevision(_) => "no_such_revision",
            Refusal::BadRecord(_) => "bad_record",
            Refusal::Split(problem)
            | Refusal::TargetUnusable(problem)
            | Refusal::RevisionUnusable { problem, .. } => problem.kind(),
            Refusal::DeadPool { .. } => "dead_pool",
            Refusal::MirrorFailing(_) => "mirror_failing",
            Refusal::LastBackend { .. } => "last_backend",
            Refusal::HandingOver => "handing_over",
            Refusal::Persist { .. } => "persist",
            Refusal::NothingToRollBack => "nothing_to_roll_back",
            Refusal::TargetExpired(_) => "target_expired",
            Refusal::NoCanary => "no_canary",
            Refusal::NoCanarySteps => "no_canary_steps",
            Refusal::CanaryRunning(_) => "conflict",
            Refusal::Unchanged(_) => "unchanged",
            Refusal::ConfigRejected(_) => "config_rejected",
            Refusal::ReopenLogs(_) => "reopen_failed",
            Refusal::FleetConflict { .. } => "conflict",
            Refusal::NotLeader => "not_leader",
            Refusal::ClusterUnreachable(_) => "cluster_unreachable",
            Refusal::NotInFleet => "not_in_fleet",
            Refusal::Internal(_) => "internal",
        }
    }

    /// The answer line's body.
    pub fn answer(&self) -> Refused {
        Refused::new(self.kind(), self.to_string())
    }
}

impl From<ParseError> for Refusal {
    fn from(e: ParseError) -> Refusal {
        Refusal::BadRequest(e.0)
    }
}

impl From<SplitProblem> for Refusal {
    fn from(problem: SplitProblem) -> Refusal {
        Refusal::Split(problem)
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("admin.state_dir: cannot create {}: {source}", .dir.display())]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// `[cluster]` is set but its client could not be made (a file).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::client::ClusterError),
    /// The reconciled start state could not be committed.
    #[error(transparent)]
    Commit(#[from] Refusal),
}

/// `server::run` reports start-up failures as text.
impl From<StartError> for String {
    fn from(e: StartError) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_word_for_word() {
        assert_eq!(
            Refusal::DeadPool {
                pool: "green".into(),
                why: "every backend is drained".into()
            }
            .to_string(),
            "pool green has no usable backend (every backend is drained); add --force to do it anyway"
        );
        assert_eq!(
            Refusal::HandingOver.to_string(),
            "this process is handing over to its successor (binary upgrade): \
                        send the command again in a moment"
        );
        assert_eq!(
            Refusal::TargetUnusable(SplitProblem::BadSum(Share(9000))).to_string(),
            "cannot restore the rollback target: shares sum to 90, must be 100"
        );
        let persist = Refusal::Persist {
            dir: PathBuf::from("/var/lib/sy"),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(
            persist.to_string(),
            "change refused: cannot save state in /var/lib/sy: disk full"
        );
        assert_eq!(persist.kind(), "persist");
    }

    #[test]
    fn kinds_follow_the_split_problem() {
        let gone = Refusal::RevisionUnusable {
            revision: 3,
            problem: SplitProblem::NoSuchPool("red".into()),
        };
        assert_eq!(gone.kind(), "no_such_pool");
        assert_eq!(
            Refusal::from(SplitProblem::NoBackends("blue".into())).answer(),
            Refused::new("empty_pool", "pool \"blue\" has no backends")
        );
    }
}
