//! One plan function per command: from the state in force to the state the
//! command asks for, or the refusal. Plans change nothing themselves; the
//! controller commits them (persist, audit, publish) or drops them, so a
//! refused command leaves no trace.

use crate::clock::Now;
use crate::config::{self, Config, Share, Split};
use crate::guard::canary::CanaryRun;
use crate::protocol::Command;
use crate::routing::RoutingTable;

use super::audit::{AuditLog, ChangeOrigin};
use super::error::{Refusal, SplitProblem};
use super::state::RuntimeState;
use super::state::Tripped;
use super::transition::{expired, raise_split, take_share_from};

/// What a plan may look at: the config, state and table in force, who asks
/// and when.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub state: &'a RuntimeState,
    /// For the dead-pool check (backend health lives in the table).
    pub table: &'a RoutingTable,
    pub origin: ChangeOrigin,
    pub now: Now,
}

impl<'a> Ctx<'a> {
    pub fn new(
        config: &'a Config,
        state: &'a RuntimeState,
        table: &'a RoutingTable,
        origin: ChangeOrigin,
        now: Now,
    ) -> Ctx<'a> {
        Ctx {
            config,
            state,
            table,
            origin,
            now,
        }
    }
}

/// A change ready to commit.
#[derive(Debug)]
pub struct Plan {
    pub state: RuntimeState,
    /// For the audit record, the answer and the webhook.
    pub reason: String,
    /// The webhook event.
    pub event: &'static str,
    /// Count a rollback under this label once the plan is taken.
    pub count_rollback: Option<&'static str>,
    /// The change ends a canary run in progress.
    pub ends_canary: bool,
}

impl Plan {
    pub fn new(state: RuntimeState, reason: String, event: &'static str) -> Plan {
        Plan {
            state,
            reason,
            event,
            count_rollback: None,
            ends_canary: false,
        }
    }
}

/// The full split a `split` command asks for: named pools as given, the
/// others 0.
pub fn complete_split(pools: impl Iterator<Item = String>, named: &Split) -> Split {
    pools
        .map(|pool| {
            let share = named.get(&pool).copied().unwrap_or(Share::ZERO);
            (pool, share)
        })
        .collect()
}

/// Why a split cannot be put in force with this config, if it cannot.
pub fn split_problem(split: &Split, config: &Config) -> Option<SplitProblem> {
    if let Some(pool) = split.keys().find(|p| !config.pools.contains_key(*p)) {
        return Some(SplitProblem::NoSuchPool(pool.clone()));
    }
    let sum: u32 = split.values().map(|s| u32::from(s.units())).sum();
    if sum != u32::from(Share::FULL.units()) {
        return Some(SplitProblem::BadSum(Share(
            sum.min(u32::from(u16::MAX)) as u16
        )));
    }
    split
        .iter()
        .find(|(pool, share)| **share > Share::ZERO && !config.pools[*pool].has_backends())
        .map(|(pool, _)| SplitProblem::NoBackends(pool.clone()))
}

/// Refuses a split that gives more traffic to a pool with no healthy,
/// undrained backend — unless forced, which the audit reason records.
pub fn refuse_dead_pools(
    table: &RoutingTable,
    before: &Split,
    after: &Split,
    force: bool,
) -> Result<String, Refusal> {
    let dead: Vec<&crate::routing::Pool> = after
        .iter()
        .filter(|(pool, share)| **share > before.get(*pool).copied().unwrap_or(Share::ZERO))
        .filter_map(|(pool, _)| table.pool(pool).filter(|p| !p.has_usable_backend()))
        .collect();
    match (dead.first(), force) {
        (None, _) => Ok(String::new()),
        (Some(p), true) => Ok(format!(" (forced: {})", unusable_because(p))),
        (Some(p), false) => Err(Refusal::DeadPool {
            pool: p.name.clone(),
            why: unusable_because(p),
        }),
    }
}

/// Refuses a change that gives traffic to the mirror pool while its
/// copies fail the guard's error-rate test (`crate::mirror::verdict`) —
/// unless forced, which the audit reason records. Otherwise a note of what
/// the mirror saw, for the reason (empty when `pool` is not mirrored).
pub fn refuse_failing_mirror(
    table: &RoutingTable,
    pool: &str,
    force: bool,
) -> Result<String, Refusal> {
    use crate::mirror::verdict::{judge, Mirrored};
    match judge(table, pool) {
        Mirrored::No => Ok(String::new()),
        Mirrored::Fine(note) => Ok(note),
        Mirrored::Failing(failing) if force => Ok(format!(" (forced: {failing})")),
        Mirrored::Failing(failing) => Err(Refusal::MirrorFailing(failing)),
    }
}

/// Why a pool has no usable backend, in the operator's words: drained by
/// someone, or failing its health checks.
fn unusable_because(pool: &crate::routing::Pool) -> String {
    let drained = pool.backends.iter().filter(|b| b.drained).count();
    let down = pool.backends.len() - drained;
    match (drained, down) {
        (0, _) => "every backend is failing its health checks".into(),
        (_, 0) => "every backend is drained".into(),
        _ => format!("{drained} backends drained, {down} failing their health checks"),
    }
}

/// The configured name of a backend given by name or resolved address,
/// or a discovered address of one of the pool's `dns` backends.
fn backend_name(
    config: &Config,
    table: &RoutingTable,
    pool: &str,
    backend: &str,
) -> Result<String, Refusal> {
    let p = config
        .pools
        .get(pool)
        .ok_or_else(|| Refusal::NoSuchPool(pool.to_string()))?;
    let discovered = table
        .pool(pool)
        .into_iter()
        .flat_map(|p| p.backends.iter())
        .filter(|b| b.dns.is_some() && b.name == backend)
        .map(|b| b.name.clone());
    p.backends
        .iter()
        .find(|b| b.name == backend || b.addr.to_string() == backend)
        .map(|b| b.name.clone())
        .or_else(|| discovered.into_iter().next())
        .ok_or_else(|| Refusal::NoSuchBackend {
            pool: pool.to_string(),
            backend: backend.to_string(),
        })
}

/// `split [--force] POOL=PCT…`
pub fn split(ctx: &Ctx, named: &Split, force: bool) -> Result<Plan, Refusal> {
    let config = ctx.config;
    let split = complete_split(config.pools.keys().cloned(), named);
    if let Some(pool) = named.keys().find(|p| !config.pools.contains_key(*p)) {
        return Err(Refusal::NoSuchPool(pool.clone()));
    }
    if let Some(problem) = split_problem(&split, config) {
        return Err(problem.into());
    }
    let mut state = ctx.state.clone();
    let forced = refuse_dead_pools(ctx.table, &state.split, &split, force)?;
    raise_split(&mut state, split, ctx.now.wall);
    Ok(Plan::new(state, format!("split changed{forced}"), "split"))
}

/// `cutover [--force] POOL`
pub fn cutover(ctx: &Ctx, pool: &str, force: bool) -> Result<Plan, Refusal> {
    let config = ctx.config;
    if !config.pools.contains_key(pool) {
        return Err(Refusal::NoSuchPool(pool.to_string()));
    }
    let split = complete_split(
        config.pools.keys().cloned(),
        &[(pool.to_string(), Share::FULL)].into(),
    );
    if let Some(problem) = split_problem(&split, config) {
        return Err(problem.into());
    }
    let mut state = ctx.state.clone();
    let forced = refuse_dead_pools(ctx.table, &state.split, &split, force)?;
    let mirrored = refuse_failing_mirror(ctx.table, pool, force)?;
    raise_split(&mut state, split, ctx.now.wall);
    // Forcing traffic onto a failing pool is the operator's call, but the
    // guard is still on duty: say so, and how to stand it down.
    let still_guarded = if !forced.is_empty() && ctx.config.guard.enabled && !state.guard_paused {
        format!(
            "; the guard still watches {pool} and rolls back if it fails              (`switchyard ctl guard pause` to stop it)"
        )
    } else {
        String::new()
    };
    Ok(Plan::new(
        state,
        format!("cutover to {pool}{forced}{mirrored}{still_guarded}"),
        "cutover",
    ))
}

/// `rollback [REASON…]` (also the guard's): the target, once, if not too old.
pub fn rollback(ctx: &Ctx, reason: Option<&str>) -> Result<Plan, Refusal> {
    let mut state = ctx.state.clone();
    let Some(target) = state.rollback_target.take() else {
        return Err(Refusal::NothingToRollBack);
    };
    if expired(ctx.config, &target, ctx.now.wall) {
        return Err(Refusal::TargetExpired(target.revision));
    }
    let mut split = complete_split(ctx.config.pools.keys().cloned(), &target.split);
    if let Some(problem) = split_problem(&split, ctx.config) {
        return Err(Refusal::TargetUnusable(problem));
    }
    let mut reason = reason.map_or_else(|| "manual rollback".to_string(), str::to_string);
    // Never back onto a pool the guard has just taken traffic from.
    if let Some(tripped) = recently_tripped(ctx) {
        if split.get(&tripped.pool).is_some_and(|s| *s > Share::ZERO)
            && take_share_from(&mut split, &tripped.pool, None)
        {
            reason.push_str(&format!(
                " (the guard rolled back {} {}s ago: its share of the target goes to the other pools)",
                tripped.pool,
                ctx.now.wall.0.saturating_sub(tripped.at_ms) / 1000
            ));
        }
    }
    state.split = split;
    state.watch = None;
    let mut plan = Plan::new(state, reason, "rollback");
    // The guard counts its own, under the threshold that tripped.
    plan.count_rollback = (ctx.origin != ChangeOrigin::Guard).then_some("manual");
    plan.ends_canary = true;
    Ok(plan)
}

/// An operator's `split`, `cutover`, `undo` or `rollback` during a canary
/// ends the run: the operator is in charge. Marks the plan and returns the
/// `canary_aborted` event's reason.
pub fn override_canary(
    plan: &mut Plan,
    run: Option<&CanaryRun>,
    command: &Command,
    origin: ChangeOrigin,
) -> Option<String> {
    let run = run?;
    let by_operator = matches!(origin, ChangeOrigin::Admin { .. });
    if !by_operator || !(command.sets_split() || matches!(command, Command::Rollback(_))) {
        return None;
    }
    plan.ends_canary = true;
    let why = format!(
        "canary of {} ended: overridden by admin ({command})",
        run.pool
    );
    plan.reason.push_str(&format!("; {why}"));
    Some(why)
}

/// The guard's trip, if it is younger than `guard.rollback_target_ttl`.
fn recently_tripped<'a>(ctx: &'a Ctx) -> Option<&'a Tripped> {
    let ttl = u64::try_from(ctx.config.guard.rollback_target_ttl.as_millis()).unwrap_or(u64::MAX);
    ctx.state
        .tripped
        .as_ref()
        .filter(|t| ctx.now.wall.0.saturating_sub(t.at_ms) <= ttl)
}

/// The guard's rollback of `pool`: the rollback target when there is one
/// (and it is not too old), else the split in force — and in either case
/// `pool` keeps no share: it goes to `baseline` (the pool the traffic came
/// from), so a canary started from `blue=90 green=10` that fails leaves
/// green at 0, not at 10.
pub fn guard_rollback(
    ctx: &Ctx,
    pool: &str,
    baseline: Option<&str>,
    reason: String,
) -> Result<Plan, Refusal> {
    let mut state = ctx.state.clone();
    let target = state
        .rollback_target
        .take()
        .filter(|t| !expired(ctx.config, t, ctx.now.wall));
    let mut split = match &target {
        Some(t) => complete_split(ctx.config.pools.keys().cloned(), &t.split),
        None => state.split.clone(),
    };
    if !take_share_from(&mut split, pool, baseline) {
        return Err(Refusal::Internal(format!(
            "no other pool to take {pool}'s traffic"
        )));
    }
    if let Some(problem) = split_problem(&split, ctx.config) {
        return Err(Refusal::TargetUnusable(problem));
    }
    state.split = split;
    state.watch = None;
    state.tripped = Some(Tripped {
        pool: pool.to_string(),
        at_ms: ctx.now.wall.0,
    });
    let mut plan = Plan::new(state, reason, "rollback");
    plan.ends_canary = true;
    Ok(plan)
}

/// `drain [--force] POOL ADDR` (`drain` true) and `undrain POOL ADDR`.
/// Draining the last usable backend of a pool that has a share would turn
/// every request to that pool into a 503: that needs `--force`.
pub fn drain(
    ctx: &Ctx,
    pool: &str,
    backend: &str,
    drain: bool,
    force: bool,
) -> Result<Plan, Refusal> {
    let name = backend_name(ctx.config, ctx.table, pool, backend)?;
    let key = (pool.to_string(), name.clone());
    let mut state = ctx.state.clone();
    let changed = if drain {
        state.drained.insert(key)
    } else {
        state.drained.remove(&key)
    };
    if !changed {
        return Err(Refusal::Unchanged(format!(
            "{backend} in {pool} is {} drained",
            if drain { "already" } else { "not" }
        )));
    }
    let share = ctx.state.split.get(pool).copied().unwrap_or(Share::ZERO);
    if drain && !force && share > Share::ZERO {
        let others_usable = ctx
            .table
            .pool(pool)
            .is_some_and(|p| p.backends.iter().any(|b| b.name != name && b.usable()));
        if !others_usable {
            return Err(Refusal::LastBackend {
                pool: pool.to_string(),
                backend: backend.to_string(),
                share: share.percent(),
            });
        }
    }
    let reason = format!(
        "{} {backend} in {pool}",
        if drain { "drained" } else { "undrained" }
    );
    Ok(Plan::new(
        state,
        reason,
        if drain { "drain" } else { "undrain" },
    ))
}

/// `undo REV`: the split of a recorded revision, itself a raise.
pub fn undo(ctx: &Ctx, audit: &AuditLog, revision: u64) -> Result<Plan, Refusal> {
    let config = ctx.config;
    let record = audit
        .find(revision)
        .ok_or(Refusal::NoSuchRevision(revision))?;
    let named: Result<Split, String> = record
        .split
        .iter()
        .map(|(p, pct)| {
            config::parse_share(*pct)
                .map(|s| (p.clone(), s))
                .map_err(|e| e.to_string())
        })
        .collect();
    let split = complete_split(
        config.pools.keys().cloned(),
        &named.map_err(Refusal::BadRecord)?,
    );
    if let Some(pool) = record.split.keys().find(|p| !config.pools.contains_key(*p)) {
        return Err(Refusal::RevisionPoolGone {
            revision,
            pool: pool.clone(),
        });
    }
    if let Some(problem) = split_problem(&split, config) {
        return Err(Refusal::RevisionUnusable { revision, problem });
    }
    let mut state = ctx.state.clone();
    refuse_dead_pools(ctx.table, &state.split, &split, false)?;
    raise_split(&mut state, split, ctx.now.wall);
    Ok(Plan::new(
        state,
        format!("split of revision {revision} restored"),
        "split",
    ))
}

/// `guard pause` (true) / `guard resume` (false).
pub fn guard_pause(ctx: &Ctx, pause: bool) -> Result<Plan, Refusal> {
    if ctx.state.guard_paused == pause {
        return Err(Refusal::Unchanged(format!(
            "the guard is already {}",
            if pause { "paused" } else { "running" }
        )));
    }
    let mut state = ctx.state.clone();
    state.guard_paused = pause;
    let (reason, event) = if pause {
        ("guard paused", "guard_paused")
    } else {
        ("guard resumed", "guard_resumed")
    };
    Ok(Plan::new(state, reason.to_string(), event))
}
