//! Fleet mode at start: join with the fleet's state when etcd has one, seed
//! an empty prefix from this instance's own, or start from the local cache
//! when etcd does not answer.

use super::audit::{AuditLog, AuditRecord};
use super::reconcile::reconcile;
use super::state::RuntimeState;
use crate::clock::Now;
use crate::cluster::store::Current;
use crate::cluster::Cluster;
use crate::config::Config;

/// What `[cluster]` found at start.
enum AtStart {
    /// The fleet has a state: this instance joins with it.
    Joined(Box<(RuntimeState, AuditRecord)>),
    /// etcd answered and the prefix is empty: this instance seeds it.
    Empty,
    /// etcd did not answer: start from the local state file (a cache).
    Unreachable,
}

/// The state to start with in fleet mode: the fleet's (not this
/// instance's old file) when etcd has one; this instance's reconciled state
/// for an empty prefix (which it then seeds) or when etcd does not answer
/// (its state file is then the cache of the last state applied).
pub(super) fn starting_state(
    cluster: &Cluster,
    config: &Config,
    saved: Option<RuntimeState>,
    audit: &AuditLog,
    now: Now,
) -> (RuntimeState, Option<String>) {
    match at_start(cluster, config) {
        AtStart::Joined(joined) => {
            let (state, record) = *joined;
            if audit.last_revision() < Some(record.revision) {
                let _ = audit.append(&record);
            }
            (state, None)
        }
        AtStart::Empty => {
            let (mut state, reason) = reconcile(config, saved, now.wall);
            state.fleet_mod_revision = 0;
            (state, reason)
        }
        AtStart::Unreachable => reconcile(config, saved, now.wall),
    }
}

/// Reads the fleet's state at start (bounded by `[cluster] timeout`).
fn at_start(cluster: &Cluster, config: &Config) -> AtStart {
    let store = cluster.store().clone();
    let current = match cluster.block(async move { store.read().await }) {
        Ok(Some(current)) => current,
        Ok(None) => {
            cluster.link.set_connected(true);
            return AtStart::Empty;
        }
        Err(e) => {
            log::warn!("etcd unreachable at start ({e}): starting from the local state file");
            return AtStart::Unreachable;
        }
    };
    cluster.link.set_connected(true);
    cluster
        .link
        .saw(current.doc.state.revision(), current.mod_revision);
    // The file as read now counts as applied: an edit made while this
    // instance was down does not override the fleet later.
    match fleet_state(current.clone(), None, config) {
        Some(state) => {
            log::info!(
                "joined the fleet at revision {} (last changed by {})",
                state.revision,
                current.doc.instance
            );
            AtStart::Joined(Box::new((state, current.doc.record)))
        }
        None => AtStart::Unreachable,
    }
}

/// The fleet's state as this instance holds it: its own file's `[split]`
/// as last applied (`file_split` is per host), running (not stopped).
pub(super) fn fleet_state(
    current: Current,
    file_split: Option<&crate::config::Split>,
    config: &Config,
) -> Option<RuntimeState> {
    match RuntimeState::from_doc(current.doc.state) {
        Ok(mut state) => {
            state.file_split = file_split.cloned().unwrap_or_else(|| config.split.clone());
            state.stopped_at_ms = None;
            state.fleet_mod_revision = current.mod_revision;
            Some(state)
        }
        Err(e) => {
            log::error!("the fleet's state in etcd is unusable ({e}); ignored");
            None
        }
    }
}
