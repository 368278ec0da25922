//! Fleet mode (`[cluster]`, SPEC §9): many instances, one runtime state and
//! one decision, through etcd. Nothing here runs on the request path: the
//! routing table the request path reads is still published by the one
//! controller; this module only decides *what* the controller applies.
//!
//! - `client`: connecting to etcd (endpoints, TLS, auth, timeouts) and
//!   keeping a connection with bounded reconnect backoff
//! - `keys`: the key layout under `prefix`
//! - `store`: one change as one etcd transaction (compare the revision it was
//!   planned on, [+ the leader's fence]; put state + audit record)
//! - `watch`: `{prefix}/state` watched from the last applied revision, each
//!   committed change handed to the controller
//!
//! - `members`: this member's lease-bound entry (address, applied revision,
//!   start id, cumulative per-pool counts), published every `publish_interval`
//! - `election`: the leader (etcd election on the member lease), its fence,
//!   and the fleet's sums it judges on
//! - `fleet_counts`: summing the members' counts across restarts and exits
//! - `leader_silence`: a follower deposes (revokes the lease of) a leader
//!   whose entry stopped changing, so failover does not wait out the TTL
//!
//! [`Role`] is where the election (fleet-leader's `election`) leaves this
//! instance's leadership and its [`Fence`], for the controller to read.

pub mod client;
pub mod election;
pub mod fleet_counts;
pub mod keys;
pub mod leader_silence;
pub mod members;
pub mod store;
pub mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::config::types::ClusterConfig;
use client::ClusterError;
use keys::Keys;
use store::Store;

/// The leader's election key and the revision it was created at: a write
/// of the leader's automation (guard, canary) carries it, and etcd refuses
/// the write once the key is gone or was re-created (a deposed leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// This instance's place in the election, as the election module last saw
/// it. Lock-free reads (`ArcSwapOption`): the controller and status read it,
/// only the election writes it.
#[derive(Debug, Default)]
pub struct Role {
    /// `Some` while this instance holds the leadership.
    fence: ArcSwapOption<Fence>,
    /// The leader's member name, when known (this one or another).
    leader: ArcSwapOption<String>,
}

impl Role {
    pub fn new() -> Arc<Role> {
        Arc::new(Role::default())
    }

    pub fn is_leader(&self) -> bool {
        self.fence.load().is_some()
    }

    /// The fence of this instance's leadership, if it leads.
    pub fn fence(&self) -> Option<Fence> {
        self.fence.load_full().map(|f| (*f).clone())
    }

    /// Set by the election: `Some` on winning, `None` on losing the lease.
    pub fn set_fence(&self, fence: Option<Fence>) {
        self.fence.store(fence.map(Arc::new));
    }

    /// The leader's name as last observed, if any.
    pub fn leader(&self) -> Option<String> {
        self.leader.load_full().map(|l| (*l).clone())
    }

    pub fn set_leader(&self, name: Option<String>) {
        self.leader.store(name.map(Arc::new));
    }
}

/// What this instance knows of its link to etcd, for status and metrics
/// (atomics: read without the controller's lock).
#[derive(Debug, Default)]
pub struct Link {
    connected: AtomicBool,
    /// The newest fleet state's revision seen in etcd (switchyard's count).
    fleet_revision: AtomicU64,
    /// etcd's revision of that state.
    fleet_mod_revision: AtomicI64,
    /// Why etcd was last not usable (unreachable, TLS, refused
    /// credentials), until it answers again: for `status` and `ctl cluster`.
    last_error: ArcSwapOption<String>,
}

impl Link {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Returns whether this changed the link's state (for one log line per
    /// outage, not one per call).
    pub fn set_connected(&self, up: bool) -> bool {
        self.connected.swap(up, Ordering::Relaxed) != up
    }

    /// Why etcd was last not usable, while it is not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.load_full().map(|e| (*e).clone())
    }

    /// etcd failed (`Some`) or answered (`None`).
    pub fn set_error(&self, error: Option<String>) {
        self.last_error.store(error.map(Arc::new));
    }

    pub fn fleet_revision(&self) -> u64 {
        self.fleet_revision.load(Ordering::Relaxed)
    }

    pub fn fleet_mod_revision(&self) -> i64 {
        self.fleet_mod_revision.load(Ordering::Relaxed)
    }

    /// A fleet state seen in etcd (committed here, read or watched).
    pub fn saw(&self, revision: u64, mod_revision: i64) {
        if mod_revision >= self.fleet_mod_revision.load(Ordering::Relaxed) {
            self.fleet_mod_revision
                .store(mod_revision, Ordering::Relaxed);
            self.fleet_revision.store(revision, Ordering::Relaxed);
        }
    }
}

/// This instance's membership of the fleet: the etcd client, the key
/// layout, the link's state and the role. It runs its own small tokio
/// runtime, so the controller (a synchronous writer) can wait on etcd with
/// [`Cluster::block`] from any thread, and the watch and fleet-leader's
/// tasks run independently of the proxy's runtimes.
pub struct Cluster {
    pub config: ClusterConfig,
    pub keys: Keys,
    pub link: Link,
    pub role: Arc<Role>,
    store: Store,
    /// `[cluster] username` and its password, until etcd accepted them
    /// (then the client holds them and renews its token by itself).
    credentials: parking_lot::Mutex<Option<(String, String)>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Cluster {
    /// Makes the runtime and the client, and with a user tries once (within
    /// `timeout`) to authenticate. It never waits for etcd: the watch loop
    /// and the election authenticate when etcd answers later.
    pub fn start(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cluster")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Runtime(e.to_string()))?;
        // Not `block_on`: the caller may itself be on a runtime's thread.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let cfg = config.clone();
        runtime.spawn(async move {
            let _ = tx.send(client::connect(&cfg).await);
        });
        let client = rx
            .recv_timeout(config.timeout + Duration::from_millis(500))
            .map_err(|_| ClusterError::Timeout(config.timeout))??;
        let keys = Keys::new(&config.prefix);
        let cluster = Arc::new(Cluster {
            config: config.clone(),
            store: Store::new(client, keys.clone(), config.timeout),
            keys,
            link: Link::default(),
            role: Role::new(),
            credentials: parking_lot::Mutex::new(client::credentials(config)?),
            runtime: Some(runtime),
        });
        if cluster.credentials.lock().is_some() {
            let c = Arc::clone(&cluster);
            if let Err(e) = cluster.block(async move { c.authenticate().await }) {
                log::error!("cluster: cannot authenticate to etcd at start ({e}); trying again when it answers");
            }
        }
        Ok(cluster)
    }

    /// Authenticates `[cluster] username` if it is not yet (no-op without
    /// one). A failure is kept as the link's last error.
    pub async fn authenticate(&self) -> Result<(), ClusterError> {
        let Some(credentials) = self.credentials.lock().clone() else {
            return Ok(());
        };
        let mut client = self.client();
        match client::authenticate(&mut client, credentials, self.config.timeout).await {
            Ok(()) => {
                *self.credentials.lock() = None;
                log::info!("cluster: authenticated to etcd");
                Ok(())
            }
            Err(e) => {
                self.link.set_error(Some(e.to_string()));
                Err(e)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The etcd client (cheap to clone: one shared channel).
    pub fn client(&self) -> etcd_client::Client {
        self.store.client().clone()
    }

    /// The cluster runtime, for tasks that talk to etcd (watch, members,
    /// election).
    pub fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }

    /// Runs `call` on the cluster runtime and waits for it, at most
    /// `timeout` and a little (each etcd call inside is bounded by
    /// `timeout` already). For the controller, which is synchronous.
    pub fn block<T, E, F>(&self, call: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<ClusterError> + Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = tx.send(call.await);
        });
        let wait = self.config.timeout + Duration::from_millis(500);
        match rx.recv_timeout(wait) {
            Ok(result) => result,
            Err(_) => Err(ClusterError::Timeout(self.config.timeout).into()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Dropping a runtime may happen on an async thread: do not wait.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
