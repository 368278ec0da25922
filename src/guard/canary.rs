//! Canary runs: the steps of `[canary]` walked one by one, each held for its
//! time and advanced only on a passing guard verdict. Pure helpers; the
//! controller owns the state and applies the splits.

use std::time::Duration;

use crate::config::{CanaryStep, Share, Split};

use super::decide::Verdict;

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryRun {
    pub pool: String,
    /// The split when the canary started; steps scale the other pools from it.
    pub base_split: Split,
    /// Index into `[canary].steps` of the step in force.
    pub step: usize,
    /// When the step in force began (or the run was resumed), in `now_ms`.
    pub step_started_ms: u64,
    /// Time the step had already been held by an earlier process (a run
    /// resumed after a restart or an upgrade); 0 for a step begun here.
    pub held_before_ms: u64,
    pub paused: bool,
}

impl CanaryRun {
    /// How long the step in force has been held at `now_ms`, earlier
    /// processes included.
    pub fn held(&self, now_ms: u64) -> Duration {
        Duration::from_millis(
            now_ms
                .saturating_sub(self.step_started_ms)
                .saturating_add(self.held_before_ms),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CanaryNext {
    /// Stay on this step: the hold has `remaining` to run, or the verdict
    /// is not yet a pass.
    Hold { remaining: Duration },
    /// Move to step `n` (the last step is the promotion to 100 %).
    Advance(usize),
}

/// What a canary run should do now, given the guard's verdict.
pub fn next(run: &CanaryRun, steps: &[CanaryStep], verdict: &Verdict, now_ms: u64) -> CanaryNext {
    let hold = steps
        .get(run.step)
        .and_then(|s| s.hold)
        .unwrap_or(Duration::ZERO);
    let held = run.held(now_ms);
    let remaining = hold.saturating_sub(held);
    let passing = matches!(verdict, Verdict::Pass { .. });
    if run.paused || !remaining.is_zero() || !passing || run.step + 1 >= steps.len() {
        return CanaryNext::Hold { remaining };
    }
    CanaryNext::Advance(run.step + 1)
}

/// The split for a canary step: `pool` gets `weight`, the other pools share
/// the rest in the proportions they had in `base` (rounding remainder to the
/// largest of them).
pub fn step_split(base: &Split, pool: &str, weight: Share) -> Split {
    let rest = u32::from(Share::FULL.units() - weight.units());
    let others: u32 = base
        .iter()
        .filter(|(p, _)| p.as_str() != pool)
        .map(|(_, s)| u32::from(s.units()))
        .sum();
    let mut split: Split = base
        .iter()
        .map(|(p, s)| {
            let share = if p == pool {
                weight.units()
            } else {
                (u32::from(s.units()) * rest)
                    .checked_div(others)
                    .unwrap_or(0) as u16
            };
            (p.clone(), Share(share))
        })
        .collect();
    split.entry(pool.to_string()).or_insert(weight);
    let sum: u32 = split.values().map(|s| u32::from(s.units())).sum();
    let missing = u32::from(Share::FULL.units()).saturating_sub(sum) as u16;
    if missing > 0 {
        // Give the rounding remainder to the biggest non-canary pool (or the canary).
        let target = split
            .iter()
            .filter(|(p, _)| p.as_str() != pool)
            .max_by_key(|(_, s)| **s)
            .map(|(p, _)| p.clone())
            .filter(|_| others > 0)
            .unwrap_or_else(|| pool.to_string());
        if let Some(share) = split.get_mut(&target) {
            *share = Share(share.units() + missing);
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<CanaryStep> {
        let s = |w: u16, hold: Option<u64>| CanaryStep {
            weight: Share(w * 100),
            hold: hold.map(Duration::from_secs),
        };
        vec![s(5, Some(60)), s(50, Some(60)), s(100, None)]
    }

    fn run(step: usize) -> CanaryRun {
        CanaryRun {
            pool: "green".into(),
            base_split: [
                ("blue".to_string(), Share::FULL),
                ("green".to_string(), Share::ZERO),
            ]
            .into(),
            step,
            step_started_ms: 1_000,
            held_before_ms: 0,
            paused: false,
        }
    }

    #[test]
    fn a_step_advances_only_after_its_hold_and_a_pass() {
        let pass = Verdict::Pass { requests: 100 };
        let thin = Verdict::Insufficient {
            requests: 3,
            needed: 50,
        };
        assert_eq!(
            next(&run(0), &steps(), &pass, 31_000),
            CanaryNext::Hold {
                remaining: Duration::from_secs(30)
            }
        );
        assert_eq!(
            next(&run(0), &steps(), &thin, 61_000),
            CanaryNext::Hold {
                remaining: Duration::ZERO
            }
        );
        assert_eq!(
            next(&run(0), &steps(), &pass, 61_000),
            CanaryNext::Advance(1)
        );
        assert_eq!(
            next(&run(1), &steps(), &pass, 61_000),
            CanaryNext::Advance(2)
        );
        let mut paused = run(0);
        paused.paused = true;
        assert!(matches!(
            next(&paused, &steps(), &pass, 99_000),
            CanaryNext::Hold { .. }
        ));
    }

    #[test]
    fn step_splits_scale_the_other_pools() {
        let base: Split = [
            ("blue".to_string(), Share(7000)),
            ("red".to_string(), Share(3000)),
            ("green".to_string(), Share::ZERO),
        ]
        .into();
        let split = step_split(&base, "green", Share(1000));
        assert_eq!(split["green"], Share(1000));
        assert_eq!(split["blue"], Share(6300));
        assert_eq!(split["red"], Share(2700));
        let split = step_split(&base, "green", Share(3333));
        assert_eq!(
            split.values().map(|s| u32::from(s.units())).sum::<u32>(),
            10_000
        );
        let split = step_split(&base, "green", Share::FULL);
        assert_eq!(
            (split["green"], split["blue"], split["red"]),
            (Share::FULL, Share::ZERO, Share::ZERO)
        );
    }
}
