//! Fleet mode, etcd unreachable: the changes that still act on this
//! instance alone (toward safety), kept until etcd answers again and then
//! written back to the fleet.
//!
//! A rollback made here protected some pools: it took traffic from them
//! (`before` → `after`). When the fleet moved on meanwhile, the rollback is
//! not replayed as a command (the fleet's own rollback target may well be
//! the split that still gives the failing pool traffic). Instead, on the
//! fleet's newer state:
//! - if it already gives every protected pool no more than the local
//!   rollback left it, the fleet moved away from it: nothing to write back,
//!   and the log says so;
//! - otherwise the protection is applied on top of the fleet's state: each
//!   protected pool cut to what the rollback left it, its share to the pool
//!   the rollback gave traffic to. It is committed like any change, planned
//!   on the fleet's revision (so a change made meanwhile conflicts, and the
//!   protection is planned again on that).
//!
//! The other local changes (drain, `canary abort|pause`) move traffic
//! toward safety on any state: they are replayed as commands. This module
//! decides; `replay` commits.

use super::audit::{AuditRecord, ChangeOrigin};
use crate::config::{Share, Split};
use crate::protocol::Command;

/// A change applied here while etcd was unreachable, to be written back.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Replayed on the fleet's state if the fleet moved on meanwhile.
    pub command: Command,
    pub origin: ChangeOrigin,
    pub record: AuditRecord,
    /// The split the change was made on, and the one it made.
    pub before: Split,
    pub after: Split,
}

/// The guard's own rollbacks act here whatever etcd does: the command
/// replayed for the fleet if they could only act here.
pub(super) fn guard_writeback(origin: ChangeOrigin, reason: &str) -> Option<Command> {
    (origin == ChangeOrigin::Guard).then(|| Command::Rollback(Some(reason.to_string())))
}

/// The pools a change took traffic from.
pub(super) fn protected(before: &Split, after: &Split) -> Vec<String> {
    after
        .iter()
        .filter(|(pool, share)| **share < before.get(*pool).copied().unwrap_or(Share::ZERO))
        .map(|(pool, _)| pool.clone())
        .collect()
}

/// The fleet's split `fleet` with what `before` → `after` protected
/// applied on top, or `None` if `fleet` already gives every protected pool
/// no more than `after` does.
pub(super) fn protect(before: &Split, after: &Split, fleet: &Split) -> Option<Split> {
    let protected = protected(before, after);
    let share = |split: &Split, pool: &str| split.get(pool).copied().unwrap_or(Share::ZERO);
    let over: Vec<&String> = protected
        .iter()
        .filter(|p| share(fleet, p) > share(after, p))
        .collect();
    if over.is_empty() {
        return None;
    }
    // The heir: the pool the local change gave the most traffic to, else
    // the fleet's biggest pool, never a protected one.
    let gain = |pool: &str| i32::from(share(after, pool).0) - i32::from(share(before, pool).0);
    let heir = fleet
        .keys()
        .filter(|p| !protected.contains(p))
        .max_by_key(|p| (gain(p), share(fleet, p)))?
        .clone();
    let mut split = fleet.clone();
    for pool in over {
        let cut = share(fleet, pool).0 - share(after, pool).0;
        split.insert(pool.clone(), share(after, pool));
        if let Some(s) = split.get_mut(&heir) {
            *s = Share(s.0 + cut);
        }
    }
    Some(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u16)]) -> Split {
        pairs
            .iter()
            .map(|&(p, pct)| (p.to_string(), Share(pct * 100)))
            .collect()
    }

    #[test]
    fn a_fleet_that_moved_away_from_the_pool_needs_nothing() {
        let (before, after) = (
            split(&[("blue", 50), ("green", 50)]),
            split(&[("blue", 100), ("green", 0)]),
        );
        assert_eq!(
            protect(&before, &after, &split(&[("blue", 100), ("green", 0)])),
            None
        );
        // Another pool now has the traffic: still nothing for green.
        let fleet = split(&[("blue", 20), ("green", 0), ("red", 80)]);
        assert_eq!(protect(&before, &after, &fleet), None);
    }

    #[test]
    fn a_fleet_that_still_sends_traffic_there_gets_the_protection_on_top() {
        let (before, after) = (
            split(&[("blue", 50), ("green", 50)]),
            split(&[("blue", 100), ("green", 0)]),
        );
        let fleet = split(&[("blue", 30), ("green", 70)]);
        assert_eq!(
            protect(&before, &after, &fleet),
            Some(split(&[("blue", 100), ("green", 0)]))
        );
        // A third pool the fleet added keeps its share.
        let fleet = split(&[("blue", 30), ("green", 40), ("red", 30)]);
        assert_eq!(
            protect(&before, &after, &fleet),
            Some(split(&[("blue", 70), ("green", 0), ("red", 30)]))
        );
        // A partial rollback (green 50 → 10) cuts green to 10 %, no lower.
        let after = split(&[("blue", 90), ("green", 10)]);
        assert_eq!(
            protect(&before, &after, &fleet),
            Some(split(&[("blue", 60), ("green", 10), ("red", 30)]))
        );
    }
}
