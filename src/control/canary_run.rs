//! A canary run as the controller drives it: `canary start|pause|resume|
//! promote|abort` and the step advance after a passing verdict. The pure
//! step rules (`next`, `step_split`) live in `guard::canary`; this file
//! turns them into plans for the controller to commit.
//!
//! The run is persisted with the runtime state on every commit (see
//! `state::SavedCanary`), so a restart or an upgrade resumes it at its step
//! with the hold time that was left.

use crate::clock::{Now, WallMs};
use crate::config::{Config, Share};
use crate::guard::canary::{self, CanaryNext, CanaryRun};
use crate::guard::Verdict;
use crate::protocol::CanaryCommand;

use super::change::{
    complete_split, refuse_dead_pools, refuse_failing_mirror, split_problem, Ctx, Plan,
};
use super::error::Refusal;
use super::state::RuntimeState;
use super::transition::{raise_canary_step, raise_split, watch_canary};

/// Plans one canary command. Like the commands always have, it updates the
/// run in `canary` at once (a failed commit leaves a paused run paused).
pub fn command(
    ctx: &Ctx,
    canary: &mut Option<CanaryRun>,
    action: &CanaryCommand,
) -> Result<Plan, Refusal> {
    let config = ctx.config;
    let steps = &config.canary.steps;
    let mut state = ctx.state.clone();
    match action {
        CanaryCommand::Start(pool, force) => {
            if let Some(run) = canary.as_ref() {
                return Err(Refusal::CanaryRunning(run.pool.clone()));
            }
            if !config.pools.contains_key(pool) {
                return Err(Refusal::NoSuchPool(pool.clone()));
            }
            let first = steps.first().ok_or(Refusal::NoCanarySteps)?;
            let base = state.split.clone();
            let split = canary::step_split(&base, pool, first.weight);
            if let Some(problem) = split_problem(&split, config) {
                return Err(problem.into());
            }
            let forced = refuse_dead_pools(ctx.table, &state.split, &split, *force)?;
            let mirrored = refuse_failing_mirror(ctx.table, pool, *force)?;
            raise_split(&mut state, split, ctx.now.wall);
            let full = canary::step_split(&base, pool, Share::FULL);
            watch_canary(&mut state, &base, pool, &full, ctx.now.wall);
            *canary = Some(CanaryRun {
                pool: pool.clone(),
                base_split: base,
                step: 0,
                step_started_ms: ctx.now.mono.0,
                held_before_ms: 0,
                paused: false,
            });
            let reason = format!(
                "canary of {pool}: step 1/{} at {}%{forced}{mirrored}",
                steps.len(),
                first.weight
            );
            Ok(Plan::new(state, reason, "canary_step"))
        }
        CanaryCommand::Pause | CanaryCommand::Resume => {
            let pause = matches!(action, CanaryCommand::Pause);
            let run = canary.as_mut().ok_or(Refusal::NoCanary)?;
            if run.paused == pause {
                return Err(Refusal::Unchanged(format!(
                    "the canary is already {}",
                    if pause { "paused" } else { "running" }
                )));
            }
            run.paused = pause;
            // A resumed step holds for its full time again.
            run.step_started_ms = ctx.now.mono.0;
            run.held_before_ms = 0;
            let word = if pause { "paused" } else { "resumed" };
            let reason = format!("canary of {} {word}", run.pool);
            let event = if pause {
                "canary_paused"
            } else {
                "canary_resumed"
            };
            Ok(Plan::new(state, reason, event))
        }
        CanaryCommand::Promote => {
            let run = canary.take().ok_or(Refusal::NoCanary)?;
            let split = canary::step_split(&run.base_split, &run.pool, Share::FULL);
            raise_canary_step(&mut state, split, ctx.now.wall);
            let reason = format!("canary of {} promoted to 100%", run.pool);
            Ok(Plan::new(state, reason, "canary_promoted"))
        }
        CanaryCommand::Abort => {
            let run = canary.take().ok_or(Refusal::NoCanary)?;
            state.split = complete_split(config.pools.keys().cloned(), &run.base_split);
            state.watch = None;
            state.rollback_target = None;
            let reason = format!("canary of {} aborted; split before it restored", run.pool);
            let mut plan = Plan::new(state, reason, "canary_aborted");
            plan.count_rollback = Some("canary_abort");
            Ok(plan)
        }
    }
}

/// The next step of a run, ready to commit.
pub struct Step {
    pub plan: Plan,
    /// The audit record's command, `canary step N`.
    pub command: String,
    /// The run once the step is in force (`None` after the last step).
    pub run: Option<CanaryRun>,
}

/// Moves the run on if its hold is over and the verdict passes.
pub fn advance(ctx: &Ctx, run: &CanaryRun, verdict: &Verdict) -> Option<Step> {
    let steps = &ctx.config.canary.steps;
    let now = ctx.now.mono.0;
    let CanaryNext::Advance(step) = canary::next(run, steps, verdict, now) else {
        return None;
    };
    let weight = steps[step].weight;
    let mut state = ctx.state.clone();
    raise_canary_step(
        &mut state,
        canary::step_split(&run.base_split, &run.pool, weight),
        ctx.now.wall,
    );
    let last = step + 1 == steps.len();
    let (reason, event) = if last {
        let reason = format!(
            "canary of {} promoted to 100% after {} steps",
            run.pool,
            steps.len()
        );
        (reason, "canary_promoted")
    } else {
        let reason = format!(
            "canary of {}: step {}/{} at {weight}%",
            run.pool,
            step + 1,
            steps.len()
        );
        (reason, "canary_step")
    };
    Some(Step {
        plan: Plan::new(state, reason, event),
        command: format!("canary step {}", step + 1),
        run: (!last).then(|| CanaryRun {
            step,
            step_started_ms: now,
            held_before_ms: 0,
            ..run.clone()
        }),
    })
}

/// The saved canary run, resumed at its step, if the split in force is
/// still that step's (a `[split]` edited while the proxy was down, a pool
/// or a step removed from the file end the run instead).
pub fn resume(config: &Config, state: &RuntimeState, now: Now) -> Option<CanaryRun> {
    let saved = state.canary.as_ref()?;
    let stopped_at = state.stopped_at_ms.map(WallMs);
    let why_not = match config.canary.steps.get(saved.step) {
        _ if !config.pools.contains_key(&saved.pool) => Some("its pool is gone".to_string()),
        None => Some(format!("[canary] has no step {} any more", saved.step + 1)),
        Some(step) => {
            let split = canary::step_split(&saved.base_split, &saved.pool, step.weight);
            (complete_split(config.pools.keys().cloned(), &split) != state.split)
                .then(|| "the split in force is no longer its step's".to_string())
        }
    };
    if let Some(why) = why_not {
        log::warn!("the saved canary of {} is not resumed: {why}", saved.pool);
        return None;
    }
    let run = saved.resume(stopped_at, now);
    log::info!(
        "resumed the canary of {} at step {}/{} ({} held before this start{})",
        run.pool,
        run.step + 1,
        config.canary.steps.len(),
        crate::config::format_duration(run.held(now.mono.0)),
        if run.paused { ", paused" } else { "" }
    );
    Some(run)
}
