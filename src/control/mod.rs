//! The control plane: the one writer of the routing table and everything
//! it decides with. The vocabulary it speaks is `crate::protocol`.
//!
//! - `controller`: the writer — `start`, `apply`, `commit` (persist, audit,
//!   publish); the only holder of the table's publisher
//! - `change`: one plan function per command (split, cutover, rollback,
//!   drain, undo, guard pause)
//! - `canary_run`: canary commands and the step advance
//! - `judge`: the guard's tick: the watch's sequential tests, rollback on a
//!   trip, canary steps gated on evidence
//! - `reloading`: config reloads
//! - `stopping`: SIGTERM and the upgrade hand-over (when the process began to stop)
//! - `discovered`: a new DNS answer as a new backend set (one swap, no revision)
//! - `reconcile`: the saved state against the config, at start and reload
//! - `transition`: rollback target and watch when a split changes
//! - `status`: the status document
//! - `fleet`: fleet mode — a change committed through etcd, a change
//!   another instance committed adopted, the write-back after an outage,
//!   `ctl cluster`
//! - `joining`: fleet mode at start (join, seed, or the local cache)
//! - `writeback`: changes made here while etcd was unreachable, and what
//!   a rollback's write-back does on a fleet state that moved on
//! - `replay`: the write-back committed when etcd answers again
//! - `error`: refusals, each with a `kind` for the answer
//! - `state`: the runtime state file, written atomically
//! - `audit`: the JSON-lines audit log and who asked for a change
//!
//! Time enters as a value ([`crate::clock::Now`]) at every entry point.

pub mod audit;
pub mod canary_run;
pub mod change;
pub mod config_diff;
pub mod controller;
pub mod discovered;
pub mod error;
pub mod fleet;
pub mod joining;
pub mod judge;
pub mod judge_state;
pub mod reconcile;
pub mod reloading;
pub mod replay;
pub mod state;
pub mod status;
pub mod stopping;
pub mod transition;
pub mod writeback;

pub use crate::protocol::Command;
pub use audit::ChangeOrigin;
pub use controller::Controller;
pub use error::Refusal;

#[cfg(test)]
mod tests;
