//! The controller's side of DNS discovery: a new answer for one `dns`
//! backend becomes a new backend set in one table build and one swap.
//!
//! It is not a revision: the split did not change, nothing is persisted
//! and no audit record or webhook is written (`crate::discovery` counts
//! and logs it). Going through the controller's lock keeps the one-writer
//! rule: a discovered set and a command never publish over each other, and
//! every later build (split, drain, reload) carries the sets along.

use std::net::SocketAddr;
use std::sync::Arc;

use super::controller::Controller;
use crate::health::verdict::BackendHealth;
use crate::routing::{DnsKey, RoutingTable, RuntimeView};

impl Controller {
    /// Puts `addrs` (sorted, no duplicates) in force for the `dns` backend
    /// `key`. `warm` are verdicts of new addresses probed before this call,
    /// so a new address that already passed a check serves from the swap on.
    ///
    /// Returns the set it replaced, or `None` when nothing was published:
    /// the set is the one in force, or `key` is no longer in the config (a
    /// reload removed it while it was being resolved).
    pub fn put_discovered(
        &self,
        key: &DnsKey,
        addrs: Vec<SocketAddr>,
        warm: Vec<(SocketAddr, Arc<BackendHealth>)>,
    ) -> Option<Vec<SocketAddr>> {
        let mut inner = self.inner.lock();
        let config = Arc::clone(&inner.config);
        let configured = |(pool, name): &DnsKey| {
            config
                .pools
                .get(pool)
                .is_some_and(|p| p.dns.iter().any(|d| &d.name == name))
        };
        if !configured(key) {
            return None;
        }
        // Entries a reload removed are forgotten here, so one that comes
        // back later starts from its own lookup, not from a stale set.
        inner.discovered.sets.retain(|k, _| configured(k));
        let old = inner.discovered.sets.get(key).cloned().unwrap_or_default();
        if old == addrs && inner.discovered.sets.contains_key(key) {
            return None;
        }
        inner.discovered.sets.insert(key.clone(), addrs);
        for (addr, health) in warm {
            inner.discovered.warm.insert((key.0.clone(), addr), health);
        }
        let current = self.shared.table_arc();
        let table = RoutingTable::build(
            config,
            RuntimeView {
                revision: inner.state.revision,
                split: &inner.state.split,
                drained: &inner.state.drained,
                discovered: &inner.discovered,
            },
            Some(&current),
        );
        // The table holds the warm verdicts now; later builds find them there.
        inner.discovered.warm.clear();
        self.publisher.publish(table);
        Some(old)
    }
}
