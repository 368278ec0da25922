//! What a change of split does to the guard's bookkeeping: a change that
//! raises a pool's share makes the split before it the rollback target and
//! starts a watch of the pool that gained most; a canary keeps the split
//! before it as the target for all its steps. Pure functions of the states
//! and the time passed in.

use std::time::Duration;

use crate::clock::WallMs;
use crate::config::{Config, Share, Split};

use super::state::{RollbackTarget, RuntimeState, Watch};

/// Did any pool's share rise from `before` to `after`?
pub fn raises_a_share(before: &Split, after: &Split) -> bool {
    after
        .iter()
        .any(|(pool, share)| *share > before.get(pool).copied().unwrap_or(Share::ZERO))
}

/// The pool whose share rose the most from `before` to `after` (the one to
/// watch) and the one whose share fell the most (its baseline).
pub fn biggest_moves(before: &Split, after: &Split) -> (Option<String>, Option<String>) {
    let delta = |pool: &String| {
        i32::from(after.get(pool).map_or(0, |s| s.units()))
            - i32::from(before.get(pool).map_or(0, |s| s.units()))
    };
    let pools: Vec<&String> = before.keys().chain(after.keys()).collect();
    let up = pools
        .iter()
        .filter(|p| delta(p) > 0)
        .max_by_key(|p| delta(p))
        .map(|p| p.to_string());
    let down = pools
        .iter()
        .filter(|p| delta(p) < 0)
        .min_by_key(|p| delta(p))
        .map(|p| p.to_string());
    (up, down)
}

/// A split change that raises a pool's share: the split before it becomes
/// the rollback target, and the guard watches the pool that gained most.
pub fn raise_split(state: &mut RuntimeState, split: Split, now: WallMs) {
    if raises_a_share(&state.split, &split) {
        state.rollback_target = Some(RollbackTarget {
            split: state.split.clone(),
            set_at_ms: now.0,
            revision: state.revision,
        });
        let (up, down) = biggest_moves(&state.split, &split);
        // Raising the pool the guard last tripped on is the operator
        // taking that decision back.
        if state.tripped.as_ref().map(|t| &t.pool) == up.as_ref() {
            state.tripped = None;
        }
        state.watch = up.map(|pool| Watch {
            pool,
            baseline: down,
            since_ms: now.0,
        });
    }
    state.split = split;
}

/// A canary step: raises like any split, but the rollback target stays
/// the one the canary started with — its split, its revision and its age
/// (so `status` keeps saying "from revision N" of the split before the
/// canary, not of the step before this one).
pub fn raise_canary_step(state: &mut RuntimeState, split: Split, now: WallMs) {
    let target = state.rollback_target.clone();
    raise_split(state, split, now);
    state.rollback_target = target;
}

/// Moves `pool`'s share in `split` to `to` (or, when `to` has none to take
/// it, to the biggest other pool). `false` when no other pool exists.
pub fn take_share_from(split: &mut Split, pool: &str, to: Option<&str>) -> bool {
    let Some(share) = split.get(pool).copied().filter(|s| *s > Share::ZERO) else {
        return true;
    };
    let heir = to
        .filter(|t| *t != pool && split.contains_key(*t))
        .map(str::to_string)
        .or_else(|| {
            split
                .iter()
                .filter(|(p, _)| p.as_str() != pool)
                .max_by_key(|(_, s)| **s)
                .map(|(p, _)| p.clone())
        });
    let Some(heir) = heir else {
        return false;
    };
    split.insert(pool.to_string(), Share::ZERO);
    if let Some(s) = split.get_mut(&heir) {
        *s = Share(s.units() + share.units());
    }
    true
}

/// A canary run is watched and revertible from its first step even when
/// that step does not raise the pool's share (it already had that much):
/// the guard judges every step of a canary. `full` is the split with the
/// canary at 100 %, whose biggest loser is the baseline.
pub fn watch_canary(state: &mut RuntimeState, base: &Split, pool: &str, full: &Split, now: WallMs) {
    let (_, baseline) = biggest_moves(base, full);
    state.watch = Some(Watch {
        pool: pool.to_string(),
        baseline,
        since_ms: now.0,
    });
    state.rollback_target = Some(RollbackTarget {
        split: base.clone(),
        set_at_ms: now.0,
        revision: state.revision,
    });
}

/// Is the rollback target older than `guard.rollback_target_ttl` at `now`?
pub fn expired(config: &Config, target: &RollbackTarget, now: WallMs) -> bool {
    let ttl = config.guard.rollback_target_ttl;
    Duration::from_millis(now.0.saturating_sub(target.set_at_ms)) > ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u16)]) -> Split {
        pairs
            .iter()
            .map(|(p, s)| (p.to_string(), Share(*s)))
            .collect()
    }

    #[test]
    fn raising_is_any_share_going_up() {
        let a = split(&[("blue", 10_000), ("green", 0)]);
        let b = split(&[("blue", 9000), ("green", 1000)]);
        assert!(raises_a_share(&a, &b));
        assert!(raises_a_share(&b, &a));
        assert!(!raises_a_share(&a, &a));
    }

    #[test]
    fn a_raise_sets_target_and_watch_at_the_time_passed_in() {
        let mut state = RuntimeState {
            revision: 4,
            split: split(&[("blue", 10_000), ("green", 0)]),
            file_split: split(&[("blue", 10_000), ("green", 0)]),
            drained: Default::default(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
            tripped: None,
            canary: None,
            stopped_at_ms: None,
            fleet_mod_revision: 0,
        };
        raise_split(
            &mut state,
            split(&[("blue", 9000), ("green", 1000)]),
            WallMs(77),
        );
        let target = state.rollback_target.clone().unwrap();
        assert_eq!((target.set_at_ms, target.revision), (77, 4));
        let watch = state.watch.clone().unwrap();
        assert_eq!((watch.pool.as_str(), watch.since_ms), ("green", 77));
        assert_eq!(watch.baseline.as_deref(), Some("blue"));
        // The same split again raises nothing: target and watch stay.
        raise_split(
            &mut state,
            split(&[("blue", 9000), ("green", 1000)]),
            WallMs(99),
        );
        assert_eq!(state.rollback_target, Some(target));
    }
}
