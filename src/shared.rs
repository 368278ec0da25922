//! The state every service of one switchyard process shares.
//!
//! One `Arc<Shared>` is built in `server::run` and cloned into the proxy,
//! the admin listeners and the background services. Only the controller
//! writes the table: [`Shared::new`] hands out the one [`TablePublisher`],
//! which the controller keeps; everything else reads through
//! [`Shared::table`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::collections::BTreeMap;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::routing::RoutingTable;

#[derive(Debug)]
pub struct Shared {
    /// The routing table in force. One `store` = one atomic change; only
    /// the [`TablePublisher`] stores.
    table: ArcSwap<RoutingTable>,
    /// Listeners are up and the config is loaded (`/ready`).
    ready: AtomicBool,
    /// The first round of health checks is done (or checks are off).
    health_ready: AtomicBool,
    /// Every `dns` backend has had its first lookup, answered or failed
    /// (or there are none), so a start-up request finds their addresses.
    discovery_ready: AtomicBool,
    /// SIGTERM received: `/ready` answers 503 while in-flight requests drain.
    shutting_down: AtomicBool,
    /// Config reloads by result, for `config_reloads_total`.
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Webhook deliveries by result, for `webhook_deliveries_total`.
    pub webhooks_ok: AtomicU64,
    pub webhooks_failed: AtomicU64,
    pub webhooks_dropped: AtomicU64,
    /// Webhook deliveries queued or under way (one per event and URL, plus
    /// one per event not yet fanned out): the drain at exit waits for 0.
    pub webhooks_pending: AtomicU64,
    /// Plain connections the fast path handed to pingora (rare: counted
    /// once per connection, never per request).
    pub pingora_handoffs: AtomicU64,
    /// Rollbacks by reason label, for `rollbacks_total` (control plane only).
    rollbacks: Mutex<BTreeMap<String, u64>>,
    /// The judge's evidence per test of the watched pool, for
    /// `guard_evidence` (written once per guard tick).
    guard_evidence: Mutex<Vec<(String, &'static str, f64)>>,
    /// Turns true when a successor process takes over (binary upgrade): the
    /// admin HTTP listener closes so the successor's gets every request.
    handover: tokio::sync::watch::Sender<bool>,
}

/// The one right to publish a new routing table. [`Shared::new`] makes
/// exactly one; the controller owns it, so "one writer" holds by type.
#[derive(Debug)]
pub struct TablePublisher {
    shared: Arc<Shared>,
}

impl TablePublisher {
    /// Puts `table` in force for every request that starts after this.
    pub fn publish(&self, table: RoutingTable) {
        self.shared.table.store(Arc::new(table));
    }
}

impl Shared {
    /// The shared state and the publisher of its routing table.
    pub fn new(table: RoutingTable) -> (Arc<Shared>, TablePublisher) {
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(table),
            ready: AtomicBool::new(false),
            health_ready: AtomicBool::new(false),
            discovery_ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            rollbacks: Mutex::new(BTreeMap::new()),
            guard_evidence: Mutex::new(Vec::new()),
            webhooks_ok: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            webhooks_dropped: AtomicU64::new(0),
            webhooks_pending: AtomicU64::new(0),
            pingora_handoffs: AtomicU64::new(0),
            handover: tokio::sync::watch::Sender::new(false),
        });
        let publisher = TablePublisher {
            shared: Arc::clone(&shared),
        };
        (shared, publisher)
    }

    /// The routing table in force (cheap; for one request or one read).
    pub fn table(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The routing table in force, held for as long as the caller keeps it.
    pub fn table_arc(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// A successor process is taking over this one's listeners.
    pub fn begin_handover(&self) {
        self.handover.send_replace(true);
    }

    /// Resolves once a handover has begun (at once if it already has).
    pub fn handover_begun(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut watch = self.handover.subscribe();
        async move {
            let _ = watch.wait_for(|begun| *begun).await;
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn health_ready(&self) -> bool {
        self.health_ready.load(Ordering::SeqCst)
    }

    pub fn set_health_ready(&self) {
        self.health_ready.store(true, Ordering::SeqCst);
    }

    pub fn set_discovery_ready(&self) {
        self.discovery_ready.store(true, Ordering::SeqCst);
    }

    /// Ready for traffic: listeners up, backends checked once, DNS names
    /// looked up once, not shutting down.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.health_ready.load(Ordering::SeqCst)
            && self.discovery_ready.load(Ordering::SeqCst)
            && !self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn count_reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rollback under a reason label (`manual`, `error_rate`, …).
    pub fn count_rollback(&self, reason: &str) {
        *self.rollbacks.lock().entry(reason.to_string()).or_insert(0) += 1;
    }

    /// `(pool, test, statistic / bound)` of the watch in force.
    pub fn set_guard_evidence(&self, evidence: Vec<(String, &'static str, f64)>) {
        *self.guard_evidence.lock() = evidence;
    }

    pub fn guard_evidence(&self) -> Vec<(String, &'static str, f64)> {
        self.guard_evidence.lock().clone()
    }

    pub fn rollbacks(&self) -> BTreeMap<String, u64> {
        self.rollbacks.lock().clone()
    }
}
