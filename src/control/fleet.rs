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

use super::audit::{AuditRecord, ChangeOrigin};
use super::canary_run;
use super::controller::{Controller, Inner};
use super::error::Refusal;
use super::joining::fleet_state;
use super::state::RuntimeState;
use super::writeback::Pending;
use crate::clock::Now;
use crate::cluster::store::{Current, FleetDoc, Outcome, StoreError};
use crate::cluster::watch::Follower;
use crate::cluster::Cluster;
use crate::protocol::answer::{ClusterAnswer, ClusterStatus, MemberStatus};
use crate::protocol::Command;
use crate::routing::{RoutingTable, RuntimeView};

impl Controller {
    /// Fleet mode: hands the judge the election's view (once; a second
    /// call is ignored).
    pub fn attach_decision(&self, decision: Arc<crate::cluster::election::Decision>) {
        let _ = self.decision.set(decision);
    }

    /// The election's view, in fleet mode.
    pub fn decision(&self) -> Option<&Arc<crate::cluster::election::Decision>> {
        self.decision.get()
    }

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
        let fence = if automation {
            cluster.role.fence()
        } else {
            None
        };
        let doc = FleetDoc {
            instance: cluster.name().to_string(),
            record: record.clone(),
            state: state.doc(),
        };
        let store = cluster.store().clone();
        let outcome =
            cluster.block(async move { store.commit(expected, fence.as_ref(), &doc, &[]).await });
        let result = self.settle(inner, state, record, origin, writeback, outcome, now);
        if matches!(
            result,
            Err(Refusal::NotLeader | Refusal::ClusterUnreachable(_) | Refusal::Internal(_))
        ) {
            // The plan may have started, stepped or ended the canary run
            // before this commit: the run in force is the saved one.
            inner.canary = canary_run::resume(&inner.config, &inner.state, now);
        }
        result
    }

    /// What etcd's answer to a commit means here.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        inner: &mut Inner,
        state: &mut RuntimeState,
        record: &AuditRecord,
        origin: ChangeOrigin,
        writeback: Option<&Command>,
        outcome: Result<Outcome, StoreError>,
        now: Now,
    ) -> Result<(), Refusal> {
        let Some(cluster) = self.cluster.as_ref() else {
            return Ok(());
        };
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
                let (by, revision) = match current {
                    Some(current) => {
                        let by = (current.doc.instance.clone(), current.doc.state.revision());
                        // Take the newer state now, so the next attempt plans on it.
                        self.adopt_locked(inner, *current, now);
                        by
                    }
                    None => {
                        // Someone deleted the state: the next connect seeds it.
                        inner.state.fleet_mod_revision = 0;
                        ("someone (the key was deleted)".to_string(), planned_on)
                    }
                };
                Err(Refusal::FleetConflict {
                    by,
                    revision,
                    planned_on,
                })
            }
            Ok(Outcome::Fenced) => Err(Refusal::NotLeader),
            Err(StoreError::Doc(e)) => Err(Refusal::Internal(e.to_string())),
            Err(StoreError::Cluster(e)) => {
                cluster.link.set_error(Some(e.to_string()));
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
                        before: inner.state.split.clone(),
                        after: state.split.clone(),
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
    /// as they are, if the fleet did not move meanwhile, else on the
    /// fleet's state as `writeback` decides (never giving a protected pool
    /// its traffic back).
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
            let expected = if current.is_none() {
                0
            } else {
                inner.state.fleet_mod_revision
            };
            let record = pending
                .last()
                .map(|p| p.record.clone())
                .unwrap_or_else(|| seed_record(&inner.state, cluster.name(), now));
            let earlier: Vec<AuditRecord> = pending.iter().map(|p| p.record.clone()).collect();
            let doc = FleetDoc {
                instance: cluster.name().to_string(),
                record,
                state: inner.state.doc(),
            };
            let store = cluster.store().clone();
            let outcome =
                cluster.block(async move { store.commit(expected, None, &doc, &earlier).await });
            match outcome {
                Ok(Outcome::Committed { mod_revision }) => {
                    log::info!(
                        "{} the fleet's state at revision {}",
                        if pending.is_empty() {
                            "seeded"
                        } else {
                            "wrote back"
                        },
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
            self.write_back(&mut inner, p, now);
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
            last_error: (!cluster.link.connected())
                .then(|| cluster.link.last_error())
                .flatten(),
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
        let stale_after = crate::cluster::members::stale_after(cluster.config.publish_interval);
        let members = members
            .into_iter()
            .map(|(name, value)| {
                let mut m = member_status(name, &value, status.fleet_revision, now);
                m.stale = m
                    .last_seen_ms
                    .is_some_and(|ms| ms > stale_after.as_millis() as u64);
                m
            })
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
        address: doc
            .get("address")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        applied_revision: applied,
        lag: applied.map(|a| fleet_revision.saturating_sub(a)),
        last_seen_ms: published.map(|p| now.wall.0.saturating_sub(p)),
        stale: false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{MonoMs, WallMs};

    #[test]
    fn a_member_entry_is_read_leniently() {
        let now = Now {
            wall: WallMs(10_000),
            mono: MonoMs(0),
        };
        let value = br#"{"name":"edge-2","address":"10.0.0.2:9901","applied_revision":7,"published_at_ms":9_800}"#;
        // Not JSON (an underscore in a number): every field unknown, the name kept.
        let m = member_status("edge-2".into(), value, 9, now);
        assert_eq!((m.name.as_str(), m.address, m.lag), ("edge-2", None, None));
        let value = br#"{"name":"edge-2","address":"10.0.0.2:9901","applied_revision":7,"published_at_ms":9800,"pools":{}}"#;
        let m = member_status("edge-2".into(), value, 9, now);
        assert_eq!(m.address.as_deref(), Some("10.0.0.2:9901"));
        assert_eq!(
            (m.applied_revision, m.lag, m.last_seen_ms),
            (Some(7), Some(2), Some(200))
        );
    }
}
