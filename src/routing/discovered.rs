//! What DNS discovery found, as the table builder reads it: for each
//! `{ dns = "NAME:PORT" }` backend of a pool, the addresses in force.
//!
//! The controller holds one [`Discovered`] beside the runtime state and
//! passes it into every build, so a split change, a drain or a reload
//! keeps the discovered sets, and a new answer is one more build of the
//! same revision (`crate::discovery` asks for it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::WallMs;
use crate::health::verdict::BackendHealth;

/// `(pool, dns backend as written)`, e.g. `("green", "green.internal:8080")`.
pub type DnsKey = (String, String);

#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// The addresses of each `dns` backend, sorted, without duplicates.
    /// An entry that never resolved is absent (its pool has none of its
    /// addresses yet).
    pub sets: BTreeMap<DnsKey, Vec<SocketAddr>>,
    /// Health verdicts of addresses probed before they were published
    /// (warm start), by `(pool, address)`: used by the next build for an
    /// address the table does not hold yet, then dropped.
    pub warm: BTreeMap<(String, SocketAddr), Arc<BackendHealth>>,
}

impl Discovered {
    /// The addresses in force for `key` (empty if it never resolved).
    pub fn addrs(&self, key: &DnsKey) -> &[SocketAddr] {
        self.sets.get(key).map_or(&[], Vec::as_slice)
    }
}

/// One `dns` backend of a built pool: its addresses in force and what its
/// lookups have found so far.
#[derive(Debug)]
pub struct DnsEntry {
    /// As written: `"green.internal:8080"`.
    pub name: String,
    /// The addresses this table holds for it (sorted).
    pub addrs: Vec<SocketAddr>,
    /// Kept from table to table while the entry stays in its pool.
    pub lookups: Arc<Lookups>,
}

/// What discovery learnt from one entry's lookups, for status and metrics.
/// Written by discovery after each lookup, read by status and `/metrics`;
/// never touched by the request path.
#[derive(Debug, Default)]
pub struct Lookups(Mutex<LookupRecord>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupRecord {
    /// The last lookup that succeeded.
    pub resolved_at: Option<WallMs>,
    /// The last failure, and since when lookups have been failing; both
    /// `None` once a lookup succeeds again.
    pub last_error: Option<String>,
    /// The kind of that failure (`timeout`, `nxdomain`, …): a new kind is a
    /// state change worth a log line, the same kind again is not.
    pub failing_kind: Option<&'static str>,
    pub failing_since: Option<WallMs>,
    /// Answers that changed the set in force.
    pub changes: u64,
    /// Lookups that failed (the set in force was kept).
    pub failures: u64,
}

impl Lookups {
    pub fn record(&self) -> LookupRecord {
        self.0.lock().clone()
    }

    /// A lookup that succeeded at `now` (`changed`: it changed the set).
    /// Returns how long lookups had been failing before, if they had.
    pub fn succeeded(&self, now: WallMs, changed: bool) -> Option<std::time::Duration> {
        let mut r = self.0.lock();
        r.resolved_at = Some(now);
        r.changes += u64::from(changed);
        r.last_error = None;
        r.failing_kind = None;
        r.failing_since.take().map(|since| now.since(since))
    }

    /// A failed lookup at `now`. Returns true when it is news — the first
    /// failure after a success, or a failure of another kind — so that a
    /// name failing every refresh is logged once, not every time.
    pub fn failed(&self, now: WallMs, kind: &'static str, error: String) -> bool {
        let mut r = self.0.lock();
        r.failures += 1;
        r.last_error = Some(error);
        r.failing_since.get_or_insert(now);
        r.failing_kind.replace(kind) != Some(kind)
    }
}
