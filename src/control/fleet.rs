//! Fleet mode in the controller (SPEC §9): committing a change through
//! etcd, adopting a change another instance committed, joining at start,
//! and writing back what was changed here while etcd was unreachable.
//!
//! Who applies what, once: the instance that commits a change applies it
//! itself as soon as etcd says yes (no wait for its own watch: that is the
//! lowest latency for the instance the operator talks to); every other
//! instance applies it from its watch. Each applied state remembers etcd's
//! revision of `{prefix}/state` it came from (`fleet_mod_revision`), and
//! the watch skips any event at or below it — so the committer's own event
//! and a replayed event after a reconnect are never applied twice.
//!
//! Order on a watcher: the new table is published first, then the state
//! file (a cache here: etcd is the record) and the audit line are written,
//! so propagation waits on no fsync.

use std::sync::Arc;

use super::audit::{AuditLog, AuditRecord, ChangeOrigin};
use super::canary_run;
use super::controller::{Controller, Inner};
use super::error::Refusal;
use super::reconcile::reconcile;
use super::state::RuntimeState;
use crate::clock::Now;
use crate::cluster::store::{Current, FleetDoc, Outcome, StoreError};
use crate::cluster::watch::Follower;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::protocol::answer::{ClusterAnswer, ClusterStatus, MemberStatus};
use crate::protocol::Command;
use crate::routing::{RoutingTable, RuntimeView};

/// A change applied here while etcd was unreachable, to be written back.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Replayed on the fleet's state if the fleet moved on meanwhile.
    pub command: Command,
    pub origin: ChangeOrigin,
    pub record: AuditRecord,
}

/// What `[cluster]` found at start.
enum AtStart {
    /// The fleet has a state: this instance joins with it.
    Joined(RuntimeState, AuditRecord),
    /// etcd answered and the prefix is empty: this instance seeds it.
    Empty,
    /// etcd did not answer: start from the local state file (a cache).
    Unreachable,
}

/// The guard's own rollbacks act here whatever etcd does: the command
/// replayed for the fleet if they could only act here.
pub(super) fn guard_writeback(origin: ChangeOrigin, reason: &str) -> Option<Command> {
    (origin == ChangeOrigin::Guard).then(|| Command::Rollback(Some(reason.to_string())))
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
    match at_start(cluster, config, saved.as_ref()) {
        AtStart::Joined(state, record) => {
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
fn at_start(cluster: &Cluster, config: &Config, saved: Option<&RuntimeState>) -> AtStart {
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
    match fleet_state(current.clone(), saved.map(|s| &s.file_split), config) {
        Some(state) => {
            log::info!(
                "joined the fleet at revision {} (last changed by {})",
                state.revision,
                current.doc.instance
            );
            AtStart::Joined(state, current.doc.record)
        }
        None => AtStart::Unreachable,
    }
}

/// The fleet's state as this instance holds it: its own file's `[split]`
/// as last applied (`file_split` is per host), running (not stopped).
fn fleet_state(
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

impl Controller {
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Commits `state` for the whole fleet as one etcd transaction planned
    /// on the state in force here. On success `state` carries etcd's new
    /// revision. With etcd unreachable, a change toward safety (`writeback`
    /// is the command to replay) or a start-up reconciliation applies here
    /// only; anything else is refused.
    pub(super) fn commit_to_fleet(
        &self,
        inner: &mut Inner,
        state: &mut RuntimeState,
        record: &AuditRecord,
        origin: ChangeOrigin,
        writeback: Option<&Command>,
        now: Now,
    ) -> Result<(), Refusal> {
        let Some(cluster) = self.cluster.as_ref() else {
            return Ok(());
        };
        let expected = inner.state.fleet_mod_revision;
        state.fleet_mod_revision = expected;
        let automation = matches!(origin, ChangeOrigin::Guard | ChangeOrigin::Canary);
        let fence = if automation { cluster.role.fence() } else { None };
        let doc = FleetDoc {
            instance: cluster.name().to_string(),
            record: record.clone(),
            state: state.doc(),
        };
        let store = cluster.store().clone();
        let outcome = cluster
            .block(async move { store.commit(expected, fence.as_ref(), &doc, &[]).await });
        match outcome {
            Ok(Outcome::Committed { mod_revision }) => {
                cluster.link.set_connected(true);
                cluster.link.saw(state.revision, mod_revision);
                state.fleet_mod_revision = mod_revision;
                Ok(())
            }
            Ok(Outcome::Conflict { current }) => {
                cluster.link.set_connected(true);
                let planned_on = inner.state.revision;
                let Some(current) = current else {
                    // Someone deleted the state: the next connect seeds it.
                    inner.state.fleet_mod_revision = 0;
                    return Err(Refusal::FleetConflict {
                        by: "someone (the key was deleted)".into(),
                        revision: planned_on,
                        planned_on,
                    });
                };
                let (by, revision) = (current.doc.instance.clone(), current.doc.state.revision());
                // Take the newer state now, so the next attempt plans on it.
                self.adopt_locked(inner, *current, now);
                Err(Refusal::FleetConflict {
                    by,
                    revision,
                    planned_on,
                })
            }
            Ok(Outcome::Fenced) => Err(Refusal::NotLeader),
            Err(StoreError::Doc(e)) => Err(Refusal::Internal(e.to_string())),
            Err(StoreError::Cluster(e)) => {
                if cluster.link.set_connected(false) {
                    log::warn!("etcd unreachable ({e}): serving the last applied state");
                }
                let config_only = state.split == inner.state.split
                    && state.drained == inner.state.drained
                    && matches!(origin, ChangeOrigin::File | ChangeOrigin::Signal);
                if let Some(command) = writeback {
                    log::warn!(
                        "etcd unreachable: `{}` applied on this instance only; written back when etcd answers",
                        record.command
                    );
                    inner.pending.push(Pending {
                        command: command.clone(),
                        origin,
                        record: record.clone(),
                    });
                    Ok(())
                } else if origin == ChangeOrigin::Startup || config_only {
                    Ok(())
                } else {
                    Err(Refusal::ClusterUnreachable(e.to_string()))
                }
            }
        }
    }

    /// Applies a state another instance committed (or skips one already
    /// applied here). The caller holds the writer's lock.
    pub(super) fn adopt_locked(&self, inner: &mut Inner, current: Current, now: Now) {
        if current.mod_revision <= inner.state.fleet_mod_revision {
            return;
        }
        let (instance, record) = (current.doc.instance.clone(), current.doc.record.clone());
        let Some(state) = fleet_state(current, Some(&inner.state.file_split), &inner.config) else {
            return;
        };
        let config = Arc::clone(&inner.config);
        let table = {
            let current = self.shared.table_arc();
            let view = RuntimeView::new(
                state.revision,
                &state.split,
                &state.drained,
                &inner.discovered,
            );
            RoutingTable::build(Arc::clone(&config), view, Some(&current))
        };
        self.publisher.publish(table);
        inner.canary = canary_run::resume(&config, &state, now);
        if let Err(e) = state.save(&config.admin.state_dir) {
            log::error!("cannot save the fleet's state as a local cache: {e}");
        }
        if let Err(e) = inner.audit.append(&record) {
            log::error!("could not append to the audit log: {e}");
        }
        log::info!(
            "revision {} from {instance}: {} ({}) — split {}",
            state.revision,
            record.command,
            record.reason,
            super::state::describe_split(&state.split)
        );
        inner.state = state;
    }

    /// etcd answers again. Seeds an empty prefix; adopts a state committed
    /// meanwhile; writes back the changes made here while it was away:
    /// as they are, if the fleet did not move meanwhile, else replayed as
    /// commands on the fleet's state (refused like any command if they no
    /// longer apply, e.g. nothing left to roll back).
    fn reconnected(&self, current: Option<Current>, now: Now) {
        let Some(cluster) = self.cluster.as_ref() else {
            return;
        };
        let mut inner = self.inner.lock();
        let pending = std::mem::take(&mut inner.pending);
        let unchanged = match &current {
            None => true,
            Some(c) => c.mod_revision == inner.state.fleet_mod_revision,
        };
        if unchanged && (current.is_none() || !pending.is_empty()) {
            let expected = if current.is_none() { 0 } else { inner.state.fleet_mod_revision };
            let record = pending.last().map(|p| p.record.clone()).unwrap_or_else(|| {
                seed_record(&inner.state, cluster.name(), now)
            });
            let earlier: Vec<AuditRecord> = pending.iter().map(|p| p.record.clone()).collect();
            let doc = FleetDoc {
                instance: cluster.name().to_string(),
                record,
                state: inner.state.doc(),
            };
            let store = cluster.store().clone();
            let outcome = cluster.block(async move {
                store.commit(expected, None, &doc, &earlier).await
            });
            match outcome {
                Ok(Outcome::Committed { mod_revision }) => {
                    log::info!(
                        "{} the fleet's state at revision {}",
                        if pending.is_empty() { "seeded" } else { "wrote back" },
                        inner.state.revision
                    );
                    cluster.link.saw(inner.state.revision, mod_revision);
                    inner.state.fleet_mod_revision = mod_revision;
                    if let Err(e) = inner.state.save(&inner.config.admin.state_dir) {
                        log::error!("cannot save the state cache: {e}");
                    }
                    return;
                }
                Ok(Outcome::Conflict { current: Some(c) }) => {
                    self.adopt_locked(&mut inner, *c, now);
                }
                Ok(_) | Err(_) => {
                    inner.pending = pending;
                    return;
                }
            }
        } else if let Some(c) = current {
            self.adopt_locked(&mut inner, c, now);
        }
        for p in pending {
            match self.change(&mut inner, p.command.clone(), p.origin, now) {
                Ok(applied) => log::info!(
                    "wrote back `{}` (made while etcd was unreachable) as fleet revision {}",
                    p.command,
                    applied.revision
                ),
                Err(e) => log::warn!(
                    "`{}` (made while etcd was unreachable) is not written back: the fleet moved on ({e})",
                    p.command
                ),
            }
        }
    }

    /// The fleet's last `n` audit records (the local log when etcd does not
    /// answer).
    pub(super) fn fleet_history(&self, n: usize) -> Option<Vec<AuditRecord>> {
        let cluster = self.cluster.as_ref()?;
        let store = cluster.store().clone();
        cluster.block(async move { store.history(n).await }).ok()
    }

    pub(super) fn cluster_status(&self, inner: &Inner) -> Option<ClusterStatus> {
        let cluster = self.cluster.as_ref()?;
        Some(ClusterStatus {
            name: cluster.name().to_string(),
            connected: cluster.link.connected(),
            leader: cluster.role.leader(),
            is_leader: cluster.role.is_leader(),
            fleet_revision: cluster.link.fleet_revision().max(inner.state.revision),
            applied_revision: inner.state.revision,
            pending_writeback: inner.pending.len(),
        })
    }

    /// `ctl cluster`: this instance's link, and the members as they
    /// published themselves under `{prefix}/members/`.
    pub fn cluster_answer(&self, now: Now) -> Result<ClusterAnswer, Refusal> {
        let cluster = self.cluster.as_ref().ok_or(Refusal::NotInFleet)?;
        let status = {
            let inner = self.inner.lock();
            self.cluster_status(&inner).ok_or(Refusal::NotInFleet)?
        };
        let store = cluster.store().clone();
        let (members, note) = match cluster.block(async move { store.members().await }) {
            Ok(members) => (members, None),
            Err(e) => (Vec::new(), Some(format!("etcd unreachable: {e}"))),
        };
        let members = members
            .into_iter()
            .map(|(name, value)| member_status(name, &value, status.fleet_revision, now))
            .collect();
        Ok(ClusterAnswer {
            ok: true,
            cluster: status,
            members,
            note,
        })
    }
}

/// A member's published value, read leniently: fields it lacks are `None`
/// (`address`, `applied_revision`, `published_at_ms` as fleet-leader's
/// members module writes them).
fn member_status(name: String, value: &[u8], fleet_revision: u64, now: Now) -> MemberStatus {
    let doc: serde_json::Value = serde_json::from_slice(value).unwrap_or_default();
    let applied = doc.get("applied_revision").and_then(|v| v.as_u64());
    let published = doc.get("published_at_ms").and_then(|v| v.as_u64());
    MemberStatus {
        name,
        address: doc.get("address").and_then(|v| v.as_str()).map(str::to_string),
        applied_revision: applied,
        lag: applied.map(|a| fleet_revision.saturating_sub(a)),
        last_seen_ms: published.map(|p| now.wall.0.saturating_sub(p)),
    }
}

fn seed_record(state: &RuntimeState, name: &str, now: Now) -> AuditRecord {
    AuditRecord {
        time: super::audit::rfc3339(now.wall),
        revision: state.revision,
        command: "seed".into(),
        origin: ChangeOrigin::Startup.label().into(),
        uid: None,
        reason: format!("the fleet's first state, from {name}'s"),
        split: super::state::split_doc(&state.split),
        instance: Some(name.to_string()),
    }
}

impl Follower for Controller {
    fn applied(&self) -> i64 {
        self.inner.lock().state.fleet_mod_revision
    }

    fn adopt(&self, current: Current) {
        let mut inner = self.inner.lock();
        if inner.handed_over {
            return;
        }
        self.adopt_locked(&mut inner, current, Now::read());
    }

    fn connected(&self, current: Option<Current>) {
        self.reconnected(current, Now::read());
    }
}
