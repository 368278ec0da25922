//! `{prefix}/state` watched from the revision this instance last applied,
//! each committed change handed to the controller ([`Follower`]).
//!
//! The loop: read the state (which catches up anything missed while the
//! stream was down, and is also the answer to a compaction: a read always
//! has the newest value), tell the follower it is connected, then watch
//! from `applied + 1` — etcd sends every change after that revision, so a
//! reconnect misses nothing. The stream ending, an error, or a watch
//! cancelled for compaction all go back to the read, after a bounded
//! backoff while etcd does not answer.

use std::sync::{Arc, Weak};

use etcd_client::{EventType, WatchOptions};

use super::client::{within, Backoff};
use super::store::{Current, FleetDoc};
use super::Cluster;

/// What the watch drives: the controller in fleet mode. Called on a
/// blocking thread of the cluster runtime (it takes the writer's lock and
/// writes files).
pub trait Follower: Send + Sync + 'static {
    /// etcd's revision of the state applied here (0: none).
    fn applied(&self) -> i64;
    /// A committed state newer than what is applied here, or one this
    /// instance wrote itself (to be skipped by its revision).
    fn adopt(&self, current: Current);
    /// etcd answers (again); the fleet's state is `current` (`None`: the
    /// prefix is empty). Seeds an empty prefix, adopts a newer state, and
    /// writes back what was changed here while etcd was unreachable.
    fn connected(&self, current: Option<Current>);
}

/// Starts the watch loop on the cluster runtime. It ends when the follower
/// is dropped.
pub fn spawn(cluster: &Arc<Cluster>, follower: Weak<dyn Follower>) {
    let cluster_ref = Arc::downgrade(cluster);
    cluster.handle().spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let (Some(cluster), Some(_)) = (cluster_ref.upgrade(), follower.upgrade()) else {
                return;
            };
            match follow_once(&cluster, &follower, &mut backoff).await {
                Ok(()) => {}
                Err(Lost::Read(why)) => {
                    cluster.link.set_error(Some(why.clone()));
                    if cluster.link.set_connected(false) {
                        log::warn!("etcd unreachable ({why}): serving the last applied state");
                    }
                }
                // The stream broke (its member died, say): the next read
                // says whether etcd is gone, the watch resumes either way.
                Err(Lost::Stream(why)) => {
                    log::info!("watch of the fleet state lost ({why}): resuming")
                }
            }
            drop(cluster);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    });
}

/// Why [`follow_once`] ended.
enum Lost {
    /// etcd did not answer the read: disconnected.
    Read(String),
    /// The watch stream could not be made or broke.
    Stream(String),
}

/// One read and one watch stream, until the stream ends.
async fn follow_once(
    cluster: &Arc<Cluster>,
    follower: &Weak<dyn Follower>,
    backoff: &mut Backoff,
) -> Result<(), Lost> {
    let store = cluster.store().clone();
    let read = async {
        cluster.authenticate().await.map_err(|e| e.to_string())?;
        store.read().await.map_err(|e| e.to_string())
    };
    let current = read.await.map_err(Lost::Read)?;
    cluster.link.set_error(None);
    if cluster.link.set_connected(true) {
        log::info!("etcd answers: following {}", cluster.keys.state());
    }
    if let Some(c) = &current {
        cluster.link.saw(c.doc.state.revision(), c.mod_revision);
    }
    let applied = on_blocking(follower, move |f| {
        f.connected(current);
        f.applied()
    })
    .await
    .map_err(Lost::Stream)?;
    let key = cluster.keys.state();
    let options = WatchOptions::new().with_start_revision(applied + 1);
    let mut client = cluster.client();
    let mut stream = within(
        cluster.config.timeout,
        client.watch(key.clone(), Some(options)),
    )
    .await
    .map_err(|e| Lost::Stream(e.to_string()))?;
    backoff.reset();
    loop {
        let message = (stream.message().await).map_err(|e| Lost::Stream(e.to_string()))?;
        let Some(response) = message else {
            return Err(Lost::Stream("the watch stream ended".into()));
        };
        if response.canceled() {
            // Compacted past `applied`, or cancelled by etcd: read again.
            log::info!(
                "watch of {key} cancelled ({}; compacted at {}): reading the state again",
                response.cancel_reason(),
                response.compact_revision()
            );
            return Ok(());
        }
        for event in response.events() {
            if event.event_type() != EventType::Put {
                log::warn!("{key} was deleted in etcd: keeping the state in force");
                continue;
            }
            let Some(kv) = event.kv() else { continue };
            let doc: FleetDoc = match serde_json::from_slice(kv.value()) {
                Ok(doc) => doc,
                Err(e) => {
                    log::error!(
                        "{key} at etcd revision {} is not a fleet state: {e}; ignored",
                        kv.mod_revision()
                    );
                    continue;
                }
            };
            let current = Current {
                doc,
                mod_revision: kv.mod_revision(),
            };
            cluster
                .link
                .saw(current.doc.state.revision(), current.mod_revision);
            on_blocking(follower, move |f| f.adopt(current))
                .await
                .map_err(Lost::Stream)?;
        }
    }
}

/// Runs `work` on the follower on a blocking thread (it takes the
/// controller's lock, which a commit holds while it waits on this runtime).
async fn on_blocking<T: Send + 'static>(
    follower: &Weak<dyn Follower>,
    work: impl FnOnce(&dyn Follower) -> T + Send + 'static,
) -> Result<T, String> {
    let follower = follower.clone();
    tokio::task::spawn_blocking(move || follower.upgrade().map(|f| work(f.as_ref())))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the controller is gone".to_string())
}
