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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::{Discovered, Lookups};
    use crate::clock::WallMs;
    use crate::config::parse;
    use crate::routing::{RoutingTable, RuntimeView};

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    fn build(discovered: &Discovered, previous: Option<&RoutingTable>) -> RoutingTable {
        let text =
            "[pools.app]\nbackends = [\"127.0.0.9:80\", { dns = \"app.test:80\", weight = 4 }]\n";
        let config = Arc::new(parse(text, std::path::Path::new("/")).expect("valid"));
        let split = config.split.clone();
        RoutingTable::build(
            Arc::clone(&config),
            RuntimeView {
                revision: 1,
                split: &split,
                drained: &Default::default(),
                discovered,
            },
            previous,
        )
    }

    fn set(addrs: &[&str]) -> Discovered {
        let mut d = Discovered::default();
        d.sets.insert(
            ("app".into(), "app.test:80".into()),
            addrs.iter().map(|a| addr(a)).collect(),
        );
        d
    }

    #[test]
    fn a_new_answer_keeps_the_verdicts_and_statistics_of_what_stays() {
        let first = build(
            &set(&["127.0.0.2:80", "127.0.0.3:80", "127.0.0.9:80"]),
            None,
        );
        let pool = &first.pools[0];
        let names: Vec<&str> = pool.backends.iter().map(|b| b.name.as_str()).collect();
        // The fixed backend first; an address it already has is not added twice.
        assert_eq!(names, ["127.0.0.9:80", "127.0.0.2:80", "127.0.0.3:80"]);
        assert_eq!(pool.backends[1].weight, 4);
        assert_eq!(pool.backends[1].dns.as_deref(), Some("app.test:80"));
        assert_eq!(pool.backends[0].dns, None);
        pool.dns[0].lookups.succeeded(WallMs(1), false);

        let second = build(&set(&["127.0.0.3:80", "127.0.0.4:80"]), Some(&first));
        let (old, new) = (&first.pools[0], &second.pools[0]);
        let names: Vec<&str> = new.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.9:80", "127.0.0.3:80", "127.0.0.4:80"]);
        assert!(
            Arc::ptr_eq(&old.backends[2].health, &new.backends[1].health),
            ".3 stays"
        );
        assert!(Arc::ptr_eq(
            &old.backends[0].health,
            &new.backends[0].health
        ));
        assert_eq!(
            new.backends[2].health.state_label(),
            "unknown",
            ".4 starts unchecked"
        );
        assert!(
            Arc::ptr_eq(&old.stats, &new.stats),
            "the pool keeps its statistics"
        );
        assert!(Arc::ptr_eq(&old.dns[0].lookups, &new.dns[0].lookups));
        assert_eq!(
            new.dns[0].addrs,
            [addr("127.0.0.3:80"), addr("127.0.0.4:80")]
        );
    }

    #[test]
    fn a_warm_verdict_is_used_for_an_address_the_table_does_not_hold_yet() {
        let first = build(&set(&[]), None);
        assert_eq!(
            first.pools[0].backends.len(),
            1,
            "not resolved yet: the fixed one only"
        );
        let mut next = set(&["127.0.0.2:80"]);
        let warm = Arc::new(crate::health::verdict::BackendHealth::new(true));
        next.warm
            .insert(("app".into(), addr("127.0.0.2:80")), Arc::clone(&warm));
        let second = build(&next, Some(&first));
        assert!(Arc::ptr_eq(&second.pools[0].backends[1].health, &warm));
    }

    #[test]
    fn a_failing_name_is_news_once_per_kind_of_failure() {
        let lookups = Lookups::default();
        assert!(lookups.failed(WallMs(10), "timeout", "no answer".into()));
        assert!(!lookups.failed(WallMs(20), "timeout", "no answer".into()));
        assert!(lookups.failed(WallMs(30), "nxdomain", "no such name".into()));
        let record = lookups.record();
        assert_eq!(
            (record.failures, record.failing_since),
            (3, Some(WallMs(10)))
        );
        let outage = lookups.succeeded(WallMs(1010), true);
        assert_eq!(outage, Some(std::time::Duration::from_millis(1000)));
        let record = lookups.record();
        assert_eq!((record.changes, record.last_error), (1, None));
        assert!(
            lookups.failed(WallMs(2000), "timeout", "no answer".into()),
            "news again"
        );
    }
}
