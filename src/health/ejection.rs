//! Passive ejection as a pure state machine: a backend that fails
//! `eject_consecutive_failures` requests in a row is taken out for
//! `eject_base_time`, doubling on repeated ejections up to `eject_max_time`,
//! never more than `eject_max_percent` of its pool at once (with one
//! backend, never).
//!
//! Time comes in as a [`MonoMs`] and the pool as two counts, so every rule
//! here is tested with made-up moments; `verdict` keeps the state
//! in atomics and reads the clock only when an ejection may trip.

use std::time::Duration;

use crate::clock::MonoMs;
use crate::config::HealthConfig;

/// Repeated ejections double at most this many times (then stay at the max).
const MAX_DOUBLINGS: u32 = 20;

/// The ejection settings of a `[health]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures in a row that eject; 0 turns passive ejection off.
    pub consecutive_failures: u32,
    pub base: Duration,
    pub max: Duration,
    pub max_percent: u32,
}

impl Policy {
    pub fn of(config: &HealthConfig) -> Policy {
        Policy {
            consecutive_failures: config.eject_consecutive_failures,
            base: config.eject_base_time,
            max: config.eject_max_time,
            max_percent: config.eject_max_percent,
        }
    }

    /// Has a streak of `streak` failures reached the threshold? The cheap
    /// test that comes first, so a failure below it costs nothing more.
    #[inline]
    pub fn trips_at(&self, streak: u32) -> bool {
        self.consecutive_failures != 0 && streak >= self.consecutive_failures
    }

    /// May one more backend of a pool of `backends`, `ejected` of which are
    /// out already, be ejected?
    pub fn room(&self, backends: usize, ejected: usize) -> bool {
        ejected < backends * self.max_percent as usize / 100
    }
}

/// What passive ejection remembers of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    /// When the current ejection ends; `None` while not ejected.
    pub until: Option<MonoMs>,
    /// Ejections so far (each one doubles the next), reset after a long
    /// quiet stretch.
    pub ejections: u32,
    pub last_ejected_at: Option<MonoMs>,
}

/// An ejection that has just begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejected {
    pub record: Record,
    pub duration: Duration,
}

/// A failure made the streak `streak` at `now`, with `room` in the pool
/// (see [`Policy::room`]): the ejection that begins, if one does.
pub fn after_failure(
    record: Record,
    streak: u32,
    room: bool,
    now: MonoMs,
    policy: &Policy,
) -> Option<Ejected> {
    if !policy.trips_at(streak) || record.until.is_some() || !room {
        return None;
    }
    // Repeated ejections double, unless the last one was long ago.
    let quiet_for = record.last_ejected_at.map(|last| now.since(last));
    let ejections = match quiet_for {
        Some(quiet) if quiet > policy.max.saturating_mul(2) => 0,
        _ => record.ejections,
    };
    let doublings = ejections.min(MAX_DOUBLINGS);
    let duration = policy
        .base
        .saturating_mul(1u32 << doublings)
        .min(policy.max);
    Some(Ejected {
        record: Record {
            until: Some(now.plus(duration)),
            ejections: ejections.saturating_add(1),
            last_ejected_at: Some(now),
        },
        duration,
    })
}

/// Has the ejection in `record` ended by `now`?
pub fn is_over(record: &Record, now: MonoMs) -> bool {
    record.until.is_some_and(|until| now >= until)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        consecutive_failures: 3,
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
        max_percent: 50,
    };

    fn at(s: u64) -> MonoMs {
        MonoMs(1_000_000 + s * 1000)
    }

    #[test]
    fn a_streak_below_the_threshold_does_not_eject() {
        assert_eq!(
            after_failure(Record::default(), 2, true, at(0), &POLICY),
            None
        );
        let ejected = after_failure(Record::default(), 3, true, at(0), &POLICY).expect("ejects");
        assert_eq!(ejected.duration, Duration::from_secs(10));
        assert_eq!(ejected.record.until, Some(at(10)));
        assert_eq!(ejected.record.ejections, 1);
    }

    #[test]
    fn zero_failures_turns_ejection_off() {
        let off = Policy {
            consecutive_failures: 0,
            ..POLICY
        };
        assert_eq!(
            after_failure(Record::default(), 1000, true, at(0), &off),
            None
        );
    }

    #[test]
    fn an_ejected_backend_or_a_full_pool_is_not_ejected_again() {
        let ejected = after_failure(Record::default(), 3, true, at(0), &POLICY).unwrap();
        assert_eq!(after_failure(ejected.record, 4, true, at(1), &POLICY), None);
        assert_eq!(
            after_failure(Record::default(), 3, false, at(0), &POLICY),
            None
        );
    }

    #[test]
    fn the_cap_is_a_share_of_the_pool_and_one_backend_is_never_ejected() {
        assert!(!POLICY.room(1, 0), "one backend: never");
        assert!(POLICY.room(2, 0));
        assert!(!POLICY.room(2, 1), "50 % of 2 is 1");
        assert!(POLICY.room(10, 4));
        assert!(!POLICY.room(10, 5));
    }

    #[test]
    fn repeated_ejections_double_up_to_the_max() {
        let mut record = Record::default();
        let mut durations = Vec::new();
        let mut now = at(0);
        for _ in 0..5 {
            let ejected = after_failure(record, 3, true, now, &POLICY).unwrap();
            durations.push(ejected.duration.as_secs());
            now = ejected.record.until.unwrap();
            assert!(is_over(&ejected.record, now));
            record = Record {
                until: None,
                ..ejected.record
            };
        }
        assert_eq!(durations, [10, 20, 40, 60, 60]);
    }

    #[test]
    fn a_long_quiet_stretch_starts_over_at_the_base_time() {
        let first = after_failure(Record::default(), 3, true, at(0), &POLICY).unwrap();
        let back = Record {
            until: None,
            ..first.record
        };
        // Within twice the max since the last ejection: doubles.
        let soon = after_failure(back, 3, true, at(120), &POLICY).unwrap();
        assert_eq!(soon.duration, Duration::from_secs(20));
        // Longer: starts over.
        let later = after_failure(back, 3, true, at(121), &POLICY).unwrap();
        assert_eq!(later.duration, Duration::from_secs(10));
        assert_eq!(later.record.ejections, 1);
    }

    #[test]
    fn an_ejection_ends_at_its_time_not_before() {
        let ejected = after_failure(Record::default(), 3, true, at(0), &POLICY).unwrap();
        assert!(!is_over(&ejected.record, at(9)));
        assert!(is_over(&ejected.record, at(10)));
        assert!(!is_over(&Record::default(), at(10)), "not ejected");
    }
}
