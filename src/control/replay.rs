//! Fleet mode: writing back, once etcd answers again, the changes made
//! here while it was unreachable, on the fleet's state as `writeback`
//! decides (a rollback never gives the pool it protected its traffic back).

use std::sync::Arc;

use super::controller::{Commit, Controller, Inner};
use super::error::Refusal;
use super::writeback::{protect, protected, Pending};
use crate::clock::Now;
use crate::protocol::Command;

/// How many times a write-back is planned again on a newer fleet state.
const ATTEMPTS: usize = 3;

impl Controller {
    /// Writes back one change made here while etcd was unreachable, on the
    /// fleet's state (in `inner`, just adopted).
    pub(super) fn write_back(&self, inner: &mut Inner, p: Pending, now: Now) {
        if !matches!(p.command, Command::Rollback(_)) {
            match self.change(inner, p.command.clone(), p.origin, now) {
                Ok(applied) => log::info!(
                    "wrote back `{}` (made while etcd was unreachable) as fleet revision {}",
                    p.command,
                    applied.revision
                ),
                Err(e) => log::warn!(
                    "`{}` (made while etcd was unreachable) is not written back: {e}",
                    p.command
                ),
            }
            return;
        }
        let protected_pools = protected(&p.before, &p.after);
        let pools = protected_pools.join(", ");
        for _ in 0..ATTEMPTS {
            let fleet_revision = inner.state.revision;
            let Some(split) = protect(&p.before, &p.after, &inner.state.split) else {
                log::warn!(
                    "`{}` (made while etcd was unreachable) is not written back: the fleet's \
                     revision {fleet_revision} already gives {pools} no more traffic than it did",
                    p.record.command
                );
                return;
            };
            let mut state = inner.state.clone();
            state.split = split;
            // The protected pools are not watched nor to be returned to.
            state.watch = None;
            state.rollback_target = None;
            // A canary of a protected pool ends with the protection.
            if (inner.canary.as_ref()).is_some_and(|run| protected_pools.contains(&run.pool)) {
                inner.canary = None;
            }
            let reason = format!(
                "{} — written back after etcd returned, on the fleet's revision {fleet_revision}, \
                 which still gave {pools} more traffic",
                p.record.reason
            );
            let command = format!("{} (written back)", p.record.command);
            let commit = Commit {
                writeback: Some(p.command.clone()),
                ..Commit::new(&command, p.origin, &reason, "rollback")
            };
            let config = Arc::clone(&inner.config);
            match self.commit(inner, config, state, commit, now) {
                Ok(revision) => {
                    log::warn!("{command}: fleet revision {revision} takes traffic from {pools}");
                    return;
                }
                // Someone committed meanwhile (now adopted): plan again.
                Err(Refusal::FleetConflict { .. }) => continue,
                Err(e) => {
                    log::error!("`{command}` could not be written back: {e}");
                    return;
                }
            }
        }
        log::error!(
            "`{}` not written back: the fleet's state kept changing",
            p.record.command
        );
    }
}
