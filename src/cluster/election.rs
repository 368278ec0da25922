//! One leader in the fleet: etcd's election API on `{prefix}/leader`,
//! campaigned with this member's lease, so the leadership ends when the
//! lease does (the process died, was paused past its TTL, or lost etcd).
//!
//! One session = one lease: grant it, keep it alive every TTL/3, publish
//! this member's entry under it every `publish_interval` (`members`),
//! campaign, and on winning fill [`Role`] with the [`Fence`] (the election
//! key and its create revision) that every automated write then carries,
//! so etcd refuses the write of a leader whose key is gone. While leading,
//! each publish tick also lists the members and refreshes the fleet's sums
//! (`fleet_counts`) that the judge reads instead of the local counts.
//!
//! The session ends when the lease is lost, when keeping it alive fails, or
//! when no renewal was confirmed for a whole TTL (checked locally before
//! anything else on every tick, so a process resumed after a pause stops
//! leading before it hears from etcd); leadership is cleared at once and a
//! new session starts after a bounded backoff.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use etcd_client::{Client, LeaderKey};

use super::client::{within, Backoff, ClusterError};
use super::fleet_counts::FleetCounts;
use super::leader_silence::{self, LeaderSilence};
use super::members::{self, MemberDoc};
use super::{Cluster, Fence, Role};
use crate::config::types::ClusterConfig;
use crate::guard::watch::PoolCounts;
use crate::shared::Shared;

/// `{prefix}/leader`: the election's name.
pub fn election_name(prefix: &str) -> String {
    super::keys::Keys::new(prefix).leader()
}

/// The fleet's summed counts as the leader last listed them.
#[derive(Debug)]
pub struct FleetSums {
    /// The leadership they were summed under (its fence's create revision):
    /// the judge starts its tests afresh when it changes.
    pub epoch: i64,
    pub at: Instant,
    pub pools: BTreeMap<String, PoolCounts>,
    /// Members whose entries were in the listing.
    pub members: usize,
    /// Members whose key is alive but that stopped publishing: the sums
    /// lack their recent traffic (`fleet_counts`).
    pub stale: Vec<String>,
}

/// What the judge needs from the election: who leads, and the sums.
pub struct Decision {
    pub cluster: Arc<Cluster>,
    pub role: Arc<Role>,
    sums: ArcSwapOption<FleetSums>,
    /// etcd confirmed this member's lease within its TTL: the fleet
    /// decides. Without it the local guard acts on local counts (toward
    /// safety: its commits are checked by the store when etcd returns).
    in_session: AtomicBool,
    /// The lease of the session under way (0: none), revoked on a clean
    /// stop so the next leader need not wait out the TTL.
    lease: AtomicI64,
}

/// Where the judge takes its counts from this tick.
pub enum CountSource {
    /// No fleet, or no etcd: this process's own counts.
    Local,
    /// This instance leads: the fleet's sums (`epoch` = the leadership).
    Fleet(Arc<FleetSums>),
    /// Another instance leads: this one does not judge.
    Follower,
}

impl Decision {
    pub fn new(cluster: Arc<Cluster>) -> Arc<Decision> {
        Arc::new(Decision {
            role: Arc::clone(&cluster.role),
            cluster,
            sums: ArcSwapOption::empty(),
            in_session: AtomicBool::new(false),
            lease: AtomicI64::new(0),
        })
    }

    /// The judge's count source now. The leader's sums must be younger than
    /// `fresh` (else the leader waits a tick rather than judge old counts).
    pub fn source(&self, fresh: Duration) -> Option<CountSource> {
        // Cut off from etcd (its commits fail, or the member lease is not
        // confirmed): the fleet cannot decide, this member judges itself.
        if !self.cluster.link.connected() || !self.in_session() {
            return Some(CountSource::Local);
        }
        if !self.role.is_leader() {
            return Some(CountSource::Follower);
        }
        let sums = self.sums.load_full()?;
        let epoch = self.role.fence().map(|f| f.create_revision);
        (Some(sums.epoch) == epoch && sums.at.elapsed() <= fresh)
            .then_some(CountSource::Fleet(sums))
    }

    pub fn is_leader(&self) -> bool {
        self.role.is_leader()
    }

    fn lead(&self, fence: Fence) {
        self.sums.store(None);
        self.role.set_fence(Some(fence));
    }

    /// Whether this member's lease is confirmed (it takes part in the fleet).
    pub fn in_session(&self) -> bool {
        self.in_session.load(Ordering::Acquire)
    }

    /// The fleet's sums as the leader last listed them (`None` elsewhere).
    pub fn sums(&self) -> Option<Arc<FleetSums>> {
        self.sums.load_full()
    }

    fn end_session(&self) {
        self.role.set_fence(None);
        self.sums.store(None);
        self.in_session.store(false, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("{0}")]
    Etcd(#[from] ClusterError),
    #[error("the lease expired (etcd no longer knows it)")]
    LeaseLost,
    #[error("no lease renewal confirmed for {0:?} (the lease TTL)")]
    NotRenewed(Duration),
    #[error("the keep-alive stream closed")]
    KeepAliveClosed,
}

/// Runs sessions until `stop` resolves, each ended session followed by a
/// backoff.
pub async fn run(
    cluster: ClusterConfig,
    client: Client,
    shared: Arc<Shared>,
    decision: Arc<Decision>,
    stop: impl std::future::Future<Output = ()>,
) {
    let start_id = members::start_id();
    let mut backoff = Backoff::new();
    tokio::pin!(stop);
    loop {
        let ended = tokio::select! {
            _ = &mut stop => None,
            end = session(&cluster, client.clone(), &shared, &decision, &start_id, &mut backoff) => Some(end),
        };
        let was_leader = decision.is_leader();
        decision.end_session();
        let Some(end) = ended else {
            // A clean stop: give the leadership (and the member key) up now.
            let lease = decision.lease.swap(0, Ordering::AcqRel);
            if lease != 0 {
                let mut client = client.clone();
                let _ = within(cluster.timeout, client.lease_revoke(lease)).await;
            }
            return;
        };
        if was_leader {
            log::warn!("cluster: {} no longer leads: {end}", cluster.name);
        } else {
            log::warn!("cluster: member session of {} ended: {end}", cluster.name);
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn session(
    cluster: &ClusterConfig,
    mut client: Client,
    shared: &Shared,
    decision: &Decision,
    start_id: &str,
    backoff: &mut Backoff,
) -> SessionEnd {
    match session_inner(cluster, &mut client, shared, decision, start_id, backoff).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

async fn session_inner(
    cluster: &ClusterConfig,
    client: &mut Client,
    shared: &Shared,
    decision: &Decision,
    start_id: &str,
    backoff: &mut Backoff,
) -> Result<std::convert::Infallible, SessionEnd> {
    let timeout = cluster.timeout;
    let ttl = cluster.lease_ttl;
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(3).max(1);
    decision.cluster.authenticate().await?;
    let lease = within(timeout, client.lease_grant(ttl_secs, None))
        .await?
        .id();
    let granted = Instant::now();
    decision.lease.store(lease, Ordering::Release);
    let (mut keeper, mut renewals) = within(timeout, client.lease_keep_alive(lease)).await?;
    let prefix = cluster.prefix.as_str();
    let doc = members::snapshot(shared, &cluster.name, start_id);
    within(timeout, members::publish(client, prefix, &doc, lease)).await?;
    decision.in_session.store(true, Ordering::Release);
    backoff.reset();
    log::info!(
        "cluster: {} joined with lease {lease:x} (ttl {ttl_secs}s)",
        cluster.name
    );
    let name = election_name(prefix);
    let campaign = {
        let mut client = client.clone();
        let (name, me) = (name.clone(), cluster.name.clone());
        // Blocks in etcd until this member's key is the oldest: the leader.
        async move { client.campaign(name, me, lease).await }
    };
    tokio::pin!(campaign);
    let mut leading: Option<LeaderKey> = None;
    let mut sums = FleetCounts::new();
    let mut last_stale: Vec<String> = Vec::new();
    let mut silence = LeaderSilence::default();
    let silent_after = leader_silence::silent_after(cluster.publish_interval, ttl);
    let mut renewed = granted;
    let mut publish = tokio::time::interval(cluster.publish_interval);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keep = tokio::time::interval(ttl / 3);
    keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = keep.tick() => {
                if renewed.elapsed() > ttl {
                    return Err(SessionEnd::NotRenewed(ttl));
                }
                if keeper.keep_alive().await.is_err() {
                    return Err(SessionEnd::KeepAliveClosed);
                }
            }
            renewal = renewals.message() => match renewal {
                Ok(Some(r)) if r.ttl() > 0 => renewed = Instant::now(),
                Ok(Some(_)) => return Err(SessionEnd::LeaseLost),
                Ok(None) => return Err(SessionEnd::KeepAliveClosed),
                Err(e) => return Err(ClusterError::from(e).into()),
            },
            won = &mut campaign, if leading.is_none() => {
                let mut won = won.map_err(ClusterError::from)?;
                let Some(key) = won.take_leader() else {
                    return Err(SessionEnd::Etcd(ClusterError::Etcd(etcd_client::Error::ElectError(
                        "campaign answered without a leader key".into(),
                    ))));
                };
                let fence = Fence { key: key.key().to_vec(), create_revision: key.rev() };
                log::warn!(
                    "cluster: {} leads the fleet (election key revision {})",
                    cluster.name, fence.create_revision
                );
                sums = FleetCounts::new();
                decision.lead(fence);
                decision.role.set_leader(Some(cluster.name.clone()));
                leading = Some(key);
            }
            _ = publish.tick() => {
                // Checked first: after a pause longer than the TTL the
                // leadership is over whatever etcd says next.
                if renewed.elapsed() > ttl {
                    return Err(SessionEnd::NotRenewed(ttl));
                }
                let doc = members::snapshot(shared, &cluster.name, start_id);
                within(timeout, members::publish(client, prefix, &doc, lease)).await?;
                if let Some(key) = &leading {
                    let docs = within(timeout, members::list(client, prefix)).await?;
                    let now = Instant::now();
                    sums.update(&docs, now);
                    let stale = sums.stale(now, members::stale_after(cluster.publish_interval));
                    if stale != last_stale {
                        log::warn!(
                            "cluster: stale members (alive, not publishing): {}",
                            if stale.is_empty() { "none".to_string() } else { stale.join(", ") }
                        );
                        last_stale = stale.clone();
                    }
                    decision.sums.store(Some(Arc::new(summed(&sums, &docs, key.rev(), stale))));
                } else {
                    let leader = observe_leader(client, &name, timeout, decision).await;
                    depose_if_silent(client, cluster, leader, &mut silence, silent_after).await;
                }
            }
        }
    }
}

fn summed(counts: &FleetCounts, docs: &[MemberDoc], epoch: i64, stale: Vec<String>) -> FleetSums {
    let names: std::collections::BTreeSet<&String> =
        docs.iter().flat_map(|d| d.pools.keys()).collect();
    FleetSums {
        epoch,
        at: Instant::now(),
        pools: names
            .into_iter()
            .map(|pool| (pool.clone(), counts.pool(pool)))
            .collect(),
        members: docs.len(),
        stale,
    }
}

/// Who leads, for `status`, `ctl cluster` and the metric: the leader's
/// name and its election lease, if there is one.
async fn observe_leader(
    client: &mut Client,
    name: &str,
    timeout: Duration,
    decision: &Decision,
) -> Option<(String, i64)> {
    let leader = match within(timeout, client.leader(name)).await {
        Ok(resp) => resp
            .kv()
            .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
        // "election: no leader" while a failover is under way.
        Err(_) => None,
    };
    decision
        .role
        .set_leader(leader.as_ref().map(|(name, _)| name.clone()));
    leader
}

/// A follower's check on the leader (`leader_silence`): the leader's lease
/// is revoked once its member entry has stopped changing for
/// `silent_after`, so the next campaigner leads at once. A failed read or
/// revoke changes nothing (the lease then expires as usual).
async fn depose_if_silent(
    client: &mut Client,
    cluster: &ClusterConfig,
    leader: Option<(String, i64)>,
    silence: &mut LeaderSilence,
    silent_after: Duration,
) {
    let Some((leader, lease)) = leader.filter(|(leader, _)| *leader != cluster.name) else {
        silence.forget();
        return;
    };
    let entry = super::keys::Keys::new(&cluster.prefix).member(&leader);
    let Ok(resp) = within(cluster.timeout, client.get(entry, None)).await else {
        return;
    };
    // No entry: it went with the leader's lease; the election follows.
    let Some(kv) = resp.kvs().first() else {
        silence.forget();
        return;
    };
    let Some(silent) = silence.observe(lease, kv.mod_revision(), Instant::now(), silent_after)
    else {
        return;
    };
    log::warn!(
        "cluster: leader {leader} has published nothing for {:.1}s (its entry still at etcd revision {}, \
         every {:?} expected; bound {:?}): {} revokes its lease {lease:x} so the next campaigner leads now",
        silent.silent.as_secs_f64(),
        kv.mod_revision(),
        cluster.publish_interval,
        silent_after,
        cluster.name,
    );
    if let Err(e) = within(cluster.timeout, client.lease_revoke(lease)).await {
        log::warn!("cluster: revoking the silent leader's lease {lease:x} failed: {e}");
    }
    silence.forget();
}

/// The election as a background service of the process (fleet mode): it
/// runs on the cluster's runtime and ends with the process.
pub struct ElectionService {
    pub shared: Arc<Shared>,
    pub decision: Arc<Decision>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ElectionService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let cluster = &self.decision.cluster;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = cluster.handle().spawn(run(
            cluster.config.clone(),
            cluster.client(),
            Arc::clone(&self.shared),
            Arc::clone(&self.decision),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let _ = shutdown.changed().await;
        let _ = stop_tx.send(());
        // The lease is revoked within `timeout`: the next leader need not
        // wait out the TTL.
        let _ = tokio::time::timeout(cluster.config.timeout * 2, task).await;
    }
}
