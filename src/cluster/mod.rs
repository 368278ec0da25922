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
//!
//! [`Role`] is where the election (fleet-leader's `election`) leaves this
//! instance's leadership and its [`Fence`], for the controller to read.

pub mod client;
pub mod election;
pub mod fleet_counts;
pub mod keys;
pub mod members;

use std::sync::Arc;

use arc_swap::ArcSwapOption;

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
