//! A follower's watch on the leader's publications. The leader puts its
//! member entry every `publish_interval`, so an entry that has not changed
//! for [`silent_after`] means the leader is dead, hung or paused. The
//! follower that sees it revokes the leader's lease: etcd ends the
//! leadership and fences its writes at once, and the next campaigner leads,
//! instead of everyone waiting out the rest of the TTL plus etcd's expiry
//! sweep (every 500 ms) — which put a failover past the TTL itself.
//!
//! Only what this follower saw counts: the entry's etcd `mod_revision`
//! across its own listings, timed on its own clock (no clocks across
//! hosts). A follower that was itself paused sees a newer revision when it
//! resumes, and starts timing again rather than depose a healthy leader.

use std::time::{Duration, Instant};

/// How long the leader's entry may stay unchanged: three publish intervals
/// (at least a second, like a stale member) and at least half the TTL, so a
/// leader is never deposed for less than etcd itself would tolerate of a
/// renewal gap.
pub fn silent_after(publish_interval: Duration, lease_ttl: Duration) -> Duration {
    super::members::stale_after(publish_interval).max(lease_ttl / 2)
}

/// What a follower last saw of the leader's entry.
#[derive(Debug, Default)]
pub struct LeaderSilence {
    seen: Option<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    lease: i64,
    mod_revision: i64,
    since: Instant,
}

/// The leader has published nothing new for `silent` (≥ the bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silent {
    pub lease: i64,
    pub silent: Duration,
}

impl LeaderSilence {
    /// One listing of the leader's entry (`lease` = the leader's election
    /// lease, `mod_revision` = its member entry's). `Some` when the same
    /// leader's entry has stayed at the same revision for `bound`.
    pub fn observe(
        &mut self,
        lease: i64,
        mod_revision: i64,
        now: Instant,
        bound: Duration,
    ) -> Option<Silent> {
        match self.seen {
            Some(seen) if seen.lease == lease && seen.mod_revision == mod_revision => {
                let silent = now.saturating_duration_since(seen.since);
                (silent >= bound).then_some(Silent { lease, silent })
            }
            _ => {
                self.seen = Some(Seen {
                    lease,
                    mod_revision,
                    since: now,
                });
                None
            }
        }
    }

    /// No leader, or this instance leads: nothing to time.
    pub fn forget(&mut self) {
        self.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(1);

    #[test]
    fn a_leader_that_keeps_publishing_is_never_silent() {
        let (mut s, t0) = (LeaderSilence::default(), Instant::now());
        for i in 0..20 {
            let now = t0 + Duration::from_millis(200 * i);
            assert_eq!(s.observe(7, 100 + i as i64, now, BOUND), None);
        }
    }

    #[test]
    fn an_entry_unchanged_for_the_bound_is_silent() {
        let (mut s, t0) = (LeaderSilence::default(), Instant::now());
        assert_eq!(s.observe(7, 100, t0, BOUND), None);
        assert_eq!(
            s.observe(7, 100, t0 + Duration::from_millis(800), BOUND),
            None
        );
        assert_eq!(
            s.observe(7, 100, t0 + Duration::from_millis(1200), BOUND),
            Some(Silent {
                lease: 7,
                silent: Duration::from_millis(1200)
            })
        );
    }

    #[test]
    fn a_new_leader_or_a_new_publication_starts_the_timing_again() {
        let (mut s, t0) = (LeaderSilence::default(), Instant::now());
        s.observe(7, 100, t0, BOUND);
        // The follower itself was paused 2 s: the leader published meanwhile.
        assert_eq!(s.observe(7, 110, t0 + Duration::from_secs(2), BOUND), None);
        assert_eq!(
            s.observe(7, 110, t0 + Duration::from_millis(2500), BOUND),
            None
        );
        // Another leader with an entry at the same revision number.
        assert_eq!(s.observe(9, 110, t0 + Duration::from_secs(4), BOUND), None);
        s.forget();
        assert_eq!(s.observe(9, 110, t0 + Duration::from_secs(6), BOUND), None);
    }

    #[test]
    fn the_bound_is_at_least_a_second_and_half_the_ttl() {
        let ms = Duration::from_millis;
        assert_eq!(silent_after(ms(200), Duration::from_secs(2)), ms(1000));
        assert_eq!(silent_after(ms(200), Duration::from_secs(3)), ms(1500));
        assert_eq!(silent_after(ms(250), Duration::from_secs(1)), ms(1000));
        assert_eq!(silent_after(ms(500), Duration::from_secs(2)), ms(1500));
    }
}
