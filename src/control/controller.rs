//! The controller: the one writer of the routing table.
//!
//! Admin commands, config reloads (file watch, SIGHUP, `reload`) and, later,
//! the guard all go through [`Controller::apply`]. Each applied change is
//! checked, turned into a complete new `RoutingTable`, persisted (state file,
//! then audit record) and only then published with one `ArcSwap` store. A
//! change that cannot be persisted is refused, so what is on disk never lags
//! what is in force. A mutex serialises writers; the request path never
//! touches it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::audit::{rfc3339_now, AuditLog, AuditRecord};
use super::command::{complete_split, CanaryCommand, ChangeOrigin, Command};
use super::state::{
    biggest_moves, describe_split, raises_a_share, split_doc, RollbackTarget, RuntimeState, Watch,
};
use crate::config::{self, format_duration, Config, Share, Split};
use crate::guard::canary::{self, CanaryNext, CanaryRun};
use crate::guard::{decide, Observation, Verdict};
use crate::notify::{EventQueue, Notifier};
use crate::routing::{RoutingTable, RuntimeView};
use crate::shared::{Shared, TablePublisher};
use crate::stats::now_ms;
use crate::status::{status_json, window_json};

pub struct Controller {
    shared: Arc<Shared>,
    /// The only writer of the routing table.
    publisher: TablePublisher,
    config_path: PathBuf,
    notifier: Notifier,
    inner: Mutex<Inner>,
    /// One reload at a time, from reading the file to publishing it: two
    /// overlapping reloads (watcher and `ctl reload`) could otherwise
    /// publish an older read of the file after a newer one. Separate from
    /// `inner` so reading the file (which resolves host names) never holds
    /// up status, commands or the guard.
    reloading: Mutex<()>,
}

struct Inner {
    config: Arc<Config>,
    state: RuntimeState,
    audit: AuditLog,
    /// A canary run in progress (kept in memory: a restart ends it, leaving
    /// the split of the step it had reached).
    canary: Option<CanaryRun>,
    /// The guard's latest verdict on the watched pool, for `status`.
    verdict: Option<Verdict>,
    /// A successor process is taking over (binary upgrade): it has read or
    /// is about to read the state file, so this process changes nothing.
    handed_over: bool,
}

/// What one committed change is, for the audit record and the webhook.
struct Change<'a> {
    command: &'a str,
    origin: ChangeOrigin,
    reason: &'a str,
    event: &'a str,
}

/// During a canary the rollback target stays the split before it began.
fn keep_target(state: &mut RuntimeState, base: &Split) {
    if let Some(target) = state.rollback_target.as_mut() {
        target.split = base.clone();
    }
}

/// A split change that raises a pool's share: the split before it becomes
/// the rollback target, and the guard watches the pool that gained most.
fn raise_split(state: &mut RuntimeState, split: Split) {
    if raises_a_share(&state.split, &split) {
        let now = unix_ms();
        state.rollback_target = Some(RollbackTarget {
            split: state.split.clone(),
            set_at_ms: now,
            revision: state.revision,
        });
        let (up, down) = biggest_moves(&state.split, &split);
        state.watch = up.map(|pool| Watch {
            pool,
            baseline: down,
            since_ms: now,
        });
    }
    state.split = split;
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a split cannot be put in force with this config, if it cannot.
fn split_problem(split: &Split, config: &Config) -> Option<String> {
    if let Some(pool) = split.keys().find(|p| !config.pools.contains_key(*p)) {
        return Some(format!("no such pool \"{pool}\""));
    }
    let sum: u32 = split.values().map(|s| u32::from(s.units())).sum();
    if sum != u32::from(Share::FULL.units()) {
        return Some(format!(
            "shares sum to {}, must be 100",
            Share(sum.min(u32::from(u16::MAX)) as u16)
        ));
    }
    split
        .iter()
        .find(|(pool, share)| **share > Share::ZERO && config.pools[*pool].backends.is_empty())
        .map(|(pool, _)| format!("pool \"{pool}\" has no backends"))
}

/// Do two splits give the same traffic to the same pools? Pools at 0 do
/// not count, so adding or removing an idle pool in the file is not a
/// change of its `[split]` (and does not reset the runtime split).
fn same_shares(a: &Split, b: &Split) -> bool {
    let positive = |s: &Split| {
        s.iter()
            .filter(|(_, share)| **share > Share::ZERO)
            .map(|(pool, share)| (pool.clone(), *share))
            .collect::<Vec<_>>()
    };
    positive(a) == positive(b)
}

/// A pool that `split` gives traffic to but `config` no longer has. Pools
/// with a share of 0 may go without disturbing the split.
fn removed_pool_with_share<'a>(split: &'a Split, config: &Config) -> Option<&'a str> {
    split
        .iter()
        .find(|(pool, share)| **share > Share::ZERO && !config.pools.contains_key(*pool))
        .map(|(pool, _)| pool.as_str())
}

/// Merges the config file with the saved runtime state (SPEC §4): the
/// runtime split stays unless the file's `[split]` changed since it was last
/// applied (or the saved split no longer fits the pools). Returns the state
/// and, if it differs from what was saved, why.
fn reconcile(config: &Config, saved: Option<RuntimeState>) -> (RuntimeState, Option<String>) {
    let Some(saved) = saved else {
        let state = RuntimeState {
            revision: 0,
            split: config.split.clone(),
            file_split: config.split.clone(),
            drained: Default::default(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
        };
        return (state, Some("initial split from the config file".into()));
    };
    let mut state = saved.clone();
    let mut reasons = Vec::new();
    state.drained.retain(|(pool, backend)| {
        config
            .pools
            .get(pool)
            .is_some_and(|p| p.backends.iter().any(|b| &b.name == backend))
    });
    if state.drained != saved.drained {
        reasons.push("drains of removed backends dropped".to_string());
    }
    let runtime_split = complete_split(config.pools.keys().cloned(), &saved.split);
    if !same_shares(&saved.file_split, &config.split) {
        reasons.push("the config file's [split] changed".into());
        state.split = config.split.clone();
    } else if let Some(problem) = removed_pool_with_share(&saved.split, config)
        .map(|p| format!("pool \"{p}\" is gone"))
        .or_else(|| split_problem(&runtime_split, config))
    {
        reasons.push(format!(
            "the runtime split no longer fits the config ({problem}); using the file's"
        ));
        state.split = config.split.clone();
    } else {
        state.split = runtime_split;
    }
    state.file_split = config.split.clone();
    let new_split = std::mem::replace(&mut state.split, saved.split.clone());
    raise_split(&mut state, new_split);
    // A target that gives traffic to a pool the file no longer has could
    // never be restored; better none than a rollback that fails when needed.
    if let Some(pool) = state
        .rollback_target
        .as_ref()
        .and_then(|t| removed_pool_with_share(&t.split, config))
    {
        reasons.push(format!("rollback target dropped (pool \"{pool}\" is gone)"));
        state.rollback_target = None;
    }
    if state.split != saved.split && !reasons.is_empty() {
        // already explained
    } else if state.split != saved.split {
        reasons.push("split adjusted to the config's pools".into());
    }
    let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    (state, reason)
}

/// Settings a running process cannot change: bound sockets, thread counts,
/// where state and audit live. `new` keeps the running values for them (so
/// the config in force describes the process as it runs); the names of the
/// ones the file changed are returned for a warning.
fn keep_restart_only_settings(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.admin != running.admin {
        changed.push("[admin] (socket, http, state_dir)");
        new.admin = running.admin.clone();
    }
    let (old, server) = (&running.server, &mut new.server);
    if server.listen != old.listen {
        changed.push("server.listen");
        server.listen = old.listen.clone();
    }
    if server.h2c != old.h2c {
        changed.push("server.h2c");
        server.h2c = old.h2c;
    }
    if server.threads != old.threads {
        changed.push("server.threads");
        server.threads = old.threads;
    }
    if server.upstream_keepalive_pool != old.upstream_keepalive_pool {
        changed.push("server.upstream_keepalive_pool");
        server.upstream_keepalive_pool = old.upstream_keepalive_pool;
    }
    if server.grace_period != old.grace_period {
        changed.push("server.grace_period");
        server.grace_period = old.grace_period;
    }
    // Listeners and their certificate files are fixed at start; the files'
    // contents are re-read whenever they change.
    if server.tls != old.tls {
        changed.push("[[server.tls]]");
        server.tls = old.tls.clone();
    }
    changed
}

impl Controller {
    /// Loads the saved state, reconciles it with `config`, builds and
    /// publishes the first table. Fails only if the state dir is unusable.
    pub fn start(
        config_path: &Path,
        config: Config,
    ) -> Result<(Arc<Controller>, EventQueue), String> {
        let state_dir = config.admin.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|e| {
            format!(
                "admin.state_dir: cannot create {}: {e}",
                state_dir.display()
            )
        })?;
        super::state::remove_stale_temp_files(&state_dir);
        let saved = match RuntimeState::load(&state_dir) {
            Ok(saved) => saved,
            Err(e) => {
                let path = RuntimeState::path(&state_dir);
                let kept = path.with_extension("json.corrupt");
                let _ = std::fs::rename(&path, &kept);
                log::warn!(
                    "{e}; kept it as {}, starting from the config file",
                    kept.display()
                );
                None
            }
        };
        let audit = AuditLog::new(&state_dir);
        let lost = saved.is_none();
        let (mut state, reason) = reconcile(&config, saved);
        if lost {
            // Without a state file, continue the audit log's numbering so a
            // revision number never means two different changes.
            state.revision = audit.last_revision().unwrap_or(0);
        }
        let config = Arc::new(config);
        let table = RoutingTable::build(
            Arc::clone(&config),
            RuntimeView {
                revision: state.revision,
                split: &state.split,
                drained: &state.drained,
            },
            None,
        );
        let (shared, publisher) = Shared::new(table);
        let (notifier, events) = Notifier::new(Arc::clone(&shared));
        let controller = Arc::new(Controller {
            shared,
            publisher,
            config_path: config_path.to_path_buf(),
            notifier,
            reloading: Mutex::new(()),
            inner: Mutex::new(Inner {
                audit,
                config: Arc::clone(&config),
                state: state.clone(),
                canary: None,
                verdict: None,
                handed_over: false,
            }),
        });
        match reason {
            Some(reason) => {
                let mut inner = controller.inner.lock();
                controller.commit(
                    &mut inner,
                    config,
                    state,
                    Change {
                        command: "start",
                        origin: ChangeOrigin::Startup,
                        reason: &reason,
                        event: "start",
                    },
                )?;
            }
            None => log::info!(
                "restored runtime state: revision {}, split {}",
                state.revision,
                describe_split(&state.split)
            ),
        }
        Ok((controller, events))
    }

    /// Freezes the runtime state for a successor process: once this returns
    /// no change is in progress and none will be made, so the state file the
    /// successor reads is the last word. Used before listening sockets are
    /// handed over in a binary upgrade.
    pub fn hand_over(&self) {
        self.inner.lock().handed_over = true;
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.inner.lock().config)
    }

    /// Carries out one command; the answer is the JSON the socket returns.
    pub fn apply(&self, command: Command, origin: ChangeOrigin) -> Result<Value, String> {
        match command {
            Command::Status => Ok(self.status()),
            Command::History(n) => {
                let records = self.inner.lock().audit.last(n);
                Ok(json!({ "ok": true, "history": records }))
            }
            Command::Reload => self.reload(origin),
            command => {
                let mut inner = self.inner.lock();
                self.change(&mut inner, command, origin)
            }
        }
    }

    pub fn status(&self) -> Value {
        let inner = self.inner.lock();
        let mut status = status_json(&self.shared.table());
        status["ok"] = json!(true);
        status["config"] = json!(self.config_path.display().to_string());
        status["rollback_target"] = match &inner.state.rollback_target {
            Some(t) => json!({
                "split": split_doc(&t.split),
                "revision": t.revision,
                "age_s": unix_ms().saturating_sub(t.set_at_ms) / 1000,
                "expired": self.expired(&inner, t),
            }),
            None => Value::Null,
        };
        status["guard"] = self.guard_json(&inner);
        status["canary"] = match &inner.canary {
            Some(run) => {
                let steps = &inner.config.canary.steps;
                let hold = steps.get(run.step).and_then(|s| s.hold).unwrap_or_default();
                let held = Duration::from_millis(now_ms().saturating_sub(run.step_started_ms));
                json!({
                    "pool": run.pool,
                    "step": run.step + 1,
                    "steps": steps.len(),
                    "weight": steps.get(run.step).map(|s| s.weight.percent()),
                    "hold_remaining_s": hold.saturating_sub(held).as_secs_f64(),
                    "paused": run.paused,
                })
            }
            None => Value::Null,
        };
        status
    }

    fn guard_json(&self, inner: &Inner) -> Value {
        let guard = &inner.config.guard;
        let watching = inner.state.watch.as_ref().map(|w| {
            let elapsed = Duration::from_millis(unix_ms().saturating_sub(w.since_ms));
            json!({
                "pool": w.pool,
                "baseline": w.baseline,
                "remaining_s": guard.watch.saturating_sub(elapsed).as_secs(),
            })
        });
        let verdict = match &inner.verdict {
            Some(Verdict::Pass { requests }) => json!({ "verdict": "pass", "requests": requests }),
            Some(Verdict::Insufficient { requests, needed }) => {
                json!({ "verdict": "insufficient", "requests": requests, "needed": needed })
            }
            Some(Verdict::Trip(trip)) => json!({
                "verdict": "trip", "threshold": trip.threshold, "measured": trip.measured,
                "limit": trip.limit, "requests": trip.requests,
            }),
            Some(Verdict::NotWatching) | None => Value::Null,
        };
        let figures = inner.state.watch.as_ref().and_then(|w| {
            self.shared
                .table()
                .pool(&w.pool)
                .map(|p| window_json(&p.stats.window(now_ms())))
        });
        json!({
            "enabled": guard.enabled,
            "paused": inner.state.guard_paused,
            "window": format_duration(guard.window),
            "watching": watching,
            "verdict": verdict,
            "figures": figures,
        })
    }

    fn expired(&self, inner: &Inner, target: &RollbackTarget) -> bool {
        let ttl = inner.config.guard.rollback_target_ttl;
        Duration::from_millis(unix_ms().saturating_sub(target.set_at_ms)) > ttl
    }

    /// Reloads only if the file differs from the config in force, without
    /// counting an identical file as a reload: the watcher's catch-up for
    /// edits made between the start-up load and the watch.
    pub fn reload_if_changed(&self, origin: ChangeOrigin) {
        let running = self.config();
        if let Ok(mut on_disk) = config::load(&self.config_path) {
            keep_restart_only_settings(&running, &mut on_disk);
            if on_disk == *running {
                return;
            }
        }
        // Changed or now invalid: a real reload, counted and logged.
        let _ = self.reload(origin);
    }

    /// Re-reads the config file. An invalid file changes nothing.
    pub fn reload(&self, origin: ChangeOrigin) -> Result<Value, String> {
        let _one_at_a_time = self.reloading.lock();
        let mut new_config = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(errors) => {
                self.shared.count_reload(false);
                let text = errors.to_string();
                let inner = self.inner.lock();
                self.notifier.send(json!({
                    "event": "reload_failed",
                    "revision": inner.state.revision,
                    "time": rfc3339_now(),
                    "split": split_doc(&inner.state.split),
                    "reason": text.trim_end(),
                    "origin": origin.label(),
                }));
                drop(inner);
                log::error!(
                    "reload of {} rejected, the running config stays:\n{text}",
                    self.config_path.display()
                );
                return Err(format!(
                    "config rejected, the running config stays:\n{}",
                    text.trim_end()
                ));
            }
        };
        self.shared.count_reload(true);
        let mut inner = self.inner.lock();
        let restart_needed = keep_restart_only_settings(&inner.config, &mut new_config);
        for setting in &restart_needed {
            log::warn!("reload: a change of {setting} takes effect at the next restart");
        }
        let mut answer = if *inner.config == new_config {
            log::info!(
                "reload ({}): {} unchanged",
                origin.label(),
                self.config_path.display()
            );
            json!({ "ok": true, "changed": false, "revision": inner.state.revision,
                    "message": "config unchanged" })
        } else {
            let (state, reason) = reconcile(&new_config, Some(inner.state.clone()));
            let reason = reason.unwrap_or_else(|| "config reloaded; runtime split kept".into());
            let revision = self.commit(
                &mut inner,
                Arc::new(new_config),
                state,
                Change {
                    command: "reload",
                    origin,
                    reason: &reason,
                    event: "reload",
                },
            )?;
            log::info!("config reloaded: revision {revision} ({reason})");
            let mut answer = self.answer(&inner, &reason);
            answer["changed"] = json!(true);
            answer
        };
        if !restart_needed.is_empty() {
            // Said in the answer too: `ctl reload` users don't read the log.
            answer["restart_needed"] = json!(restart_needed);
            let message = format!(
                "{}; needs a restart to take effect: {}",
                answer["message"].as_str().unwrap_or(""),
                restart_needed.join(", ")
            );
            answer["message"] = json!(message);
        }
        Ok(answer)
    }

    fn change(
        &self,
        inner: &mut Inner,
        command: Command,
        origin: ChangeOrigin,
    ) -> Result<Value, String> {
        let config = Arc::clone(&inner.config);
        let mut state = inner.state.clone();
        let mut event = "split";
        let reason = match &command {
            Command::Split(named, force) => {
                let split = complete_split(config.pools.keys().cloned(), named);
                if let Some(pool) = named.keys().find(|p| !config.pools.contains_key(*p)) {
                    return Err(format!("no such pool \"{pool}\""));
                }
                if let Some(problem) = split_problem(&split, &config) {
                    return Err(problem);
                }
                let forced = self.refuse_dead_pools(&state.split, &split, *force)?;
                raise_split(&mut state, split);
                format!("split changed{forced}")
            }
            Command::Cutover(pool, force) => {
                if !config.pools.contains_key(pool) {
                    return Err(format!("no such pool \"{pool}\""));
                }
                let split = complete_split(
                    config.pools.keys().cloned(),
                    &[(pool.clone(), Share::FULL)].into(),
                );
                if let Some(problem) = split_problem(&split, &config) {
                    return Err(problem);
                }
                let forced = self.refuse_dead_pools(&state.split, &split, *force)?;
                raise_split(&mut state, split);
                event = "cutover";
                format!("cutover to {pool}{forced}")
            }
            Command::Rollback(reason) => {
                let Some(target) = state.rollback_target.take() else {
                    return Err(
                        "nothing to roll back to: no change has raised a pool's share".into(),
                    );
                };
                if self.expired(inner, &target) {
                    return Err(format!(
                        "the rollback target (revision {}) is older than guard.rollback_target_ttl",
                        target.revision
                    ));
                }
                let split = complete_split(config.pools.keys().cloned(), &target.split);
                if let Some(problem) = split_problem(&split, &config) {
                    return Err(format!("cannot restore the rollback target: {problem}"));
                }
                state.split = split;
                state.watch = None;
                event = "rollback";
                if origin != ChangeOrigin::Guard {
                    self.shared.count_rollback("manual");
                }
                if inner.canary.take().is_some() {
                    log::info!("canary aborted by the rollback");
                }
                reason.clone().unwrap_or_else(|| "manual rollback".into())
            }
            Command::Drain { pool, backend } | Command::Undrain { pool, backend } => {
                let name = Self::backend_name(&config, pool, backend)?;
                let key = (pool.clone(), name);
                let drain = matches!(command, Command::Drain { .. });
                let changed = if drain {
                    state.drained.insert(key)
                } else {
                    state.drained.remove(&key)
                };
                if !changed {
                    return Err(format!(
                        "{backend} in {pool} is {} drained",
                        if drain { "already" } else { "not" }
                    ));
                }
                event = if drain { "drain" } else { "undrain" };
                format!(
                    "{} {backend} in {pool}",
                    if drain { "drained" } else { "undrained" }
                )
            }
            Command::Undo(revision) => {
                let record = inner
                    .audit
                    .find(*revision)
                    .ok_or_else(|| format!("no revision {revision} in the audit log"))?;
                let named: Result<Split, String> = record
                    .split
                    .iter()
                    .map(|(p, pct)| {
                        config::parse_share(*pct)
                            .map(|s| (p.clone(), s))
                            .map_err(|e| e.to_string())
                    })
                    .collect();
                let split = complete_split(config.pools.keys().cloned(), &named?);
                if let Some(problem) = record.split.keys().find(|p| !config.pools.contains_key(*p))
                {
                    return Err(format!(
                        "revision {revision} names pool \"{problem}\", which no longer exists"
                    ));
                }
                if let Some(problem) = split_problem(&split, &config) {
                    return Err(format!("cannot restore revision {revision}: {problem}"));
                }
                self.refuse_dead_pools(&state.split, &split, false)?;
                raise_split(&mut state, split);
                format!("split of revision {revision} restored")
            }
            Command::GuardPause(pause) => {
                if state.guard_paused == *pause {
                    return Err(format!(
                        "the guard is already {}",
                        if *pause { "paused" } else { "running" }
                    ));
                }
                state.guard_paused = *pause;
                event = if *pause {
                    "guard_paused"
                } else {
                    "guard_resumed"
                };
                format!("guard {}", if *pause { "paused" } else { "resumed" })
            }
            Command::Canary(action) => {
                let (reason, kind) = self.canary_command(inner, &mut state, action)?;
                event = kind;
                reason
            }
            Command::Status | Command::History(_) | Command::Reload => {
                return Err("internal: not a change".into())
            }
        };
        self.commit(
            inner,
            config,
            state,
            Change {
                command: &command.to_string(),
                origin,
                reason: &reason,
                event,
            },
        )?;
        Ok(self.answer(inner, &reason))
    }

    /// `canary start|pause|resume|promote|abort`: adjusts `state` and the
    /// run; returns the audit reason and the webhook event.
    fn canary_command(
        &self,
        inner: &mut Inner,
        state: &mut RuntimeState,
        action: &CanaryCommand,
    ) -> Result<(String, &'static str), String> {
        let steps = inner.config.canary.steps.clone();
        match action {
            CanaryCommand::Start(pool, force) => {
                if let Some(run) = &inner.canary {
                    return Err(format!("a canary of {} is already running", run.pool));
                }
                if !inner.config.pools.contains_key(pool) {
                    return Err(format!("no such pool \"{pool}\""));
                }
                let first = steps.first().ok_or("no canary steps configured")?;
                let base = state.split.clone();
                let split = canary::step_split(&base, pool, first.weight);
                if let Some(problem) = split_problem(&split, &inner.config) {
                    return Err(problem);
                }
                let forced = self.refuse_dead_pools(&state.split, &split, *force)?;
                raise_split(state, split);
                // The run is watched and revertible from its first step even
                // when that step does not raise the pool's share (it already
                // had that much): the guard judges every step of a canary.
                let (_, baseline) =
                    biggest_moves(&base, &canary::step_split(&base, pool, Share::FULL));
                let now = unix_ms();
                state.watch = Some(Watch {
                    pool: pool.clone(),
                    baseline,
                    since_ms: now,
                });
                state.rollback_target = Some(RollbackTarget {
                    split: base.clone(),
                    set_at_ms: now,
                    revision: state.revision,
                });
                inner.canary = Some(CanaryRun {
                    pool: pool.clone(),
                    base_split: base,
                    step: 0,
                    step_started_ms: now_ms(),
                    paused: false,
                });
                let reason = format!(
                    "canary of {pool}: step 1/{} at {}%{forced}",
                    steps.len(),
                    first.weight
                );
                Ok((reason, "canary_step"))
            }
            CanaryCommand::Pause | CanaryCommand::Resume => {
                let pause = matches!(action, CanaryCommand::Pause);
                let run = inner.canary.as_mut().ok_or("no canary is running")?;
                if run.paused == pause {
                    return Err(format!(
                        "the canary is already {}",
                        if pause { "paused" } else { "running" }
                    ));
                }
                run.paused = pause;
                // A resumed step holds for its full time again.
                run.step_started_ms = now_ms();
                let word = if pause { "paused" } else { "resumed" };
                Ok((format!("canary of {} {word}", run.pool), "canary_step"))
            }
            CanaryCommand::Promote => {
                let run = inner.canary.take().ok_or("no canary is running")?;
                let split = canary::step_split(&run.base_split, &run.pool, Share::FULL);
                raise_split(state, split);
                keep_target(state, &run.base_split);
                Ok((
                    format!("canary of {} promoted to 100%", run.pool),
                    "canary_promoted",
                ))
            }
            CanaryCommand::Abort => {
                let run = inner.canary.take().ok_or("no canary is running")?;
                state.split = complete_split(inner.config.pools.keys().cloned(), &run.base_split);
                state.watch = None;
                state.rollback_target = None;
                self.shared.count_rollback("canary_abort");
                let reason = format!("canary of {} aborted; split before it restored", run.pool);
                Ok((reason, "canary_aborted"))
            }
        }
    }

    /// One guard evaluation: judge the watched pool, roll back on a trip,
    /// move a canary along on a pass.
    pub fn guard_tick(&self) {
        let mut inner = self.inner.lock();
        if inner.handed_over {
            return;
        }
        let config = Arc::clone(&inner.config);
        // Before the first round of health checks nothing is known yet.
        if !config.guard.enabled || inner.state.guard_paused || !self.shared.health_ready() {
            return;
        }
        let Some(watch) = inner.state.watch.clone() else {
            inner.verdict = None;
            return;
        };
        let table = self.shared.table_arc();
        let Some(pool) = table.pool(&watch.pool) else {
            inner.state.watch = None;
            return;
        };
        let now = now_ms();
        let candidate = pool.stats.window(now);
        let baseline = watch
            .baseline
            .as_deref()
            .and_then(|b| table.pool(b))
            .map(|p| p.stats.window(now));
        let observation = Observation {
            candidate: &candidate,
            baseline: baseline.as_ref(),
            healthy_backends: pool
                .backends
                .iter()
                .filter(|b| !b.health.has_failed())
                .count(),
            window: config.guard.window,
        };
        let verdict = decide(&observation, &config.guard, watch.since_ms, unix_ms());
        inner.verdict = Some(verdict.clone());
        match &verdict {
            Verdict::NotWatching if inner.canary.is_none() => {
                log::info!("guard: watch of pool {} ended with no trip", watch.pool);
                inner.state.watch = None;
            }
            Verdict::Trip(trip) => {
                let reason = trip.reason(&watch.pool);
                let rollback = Command::Rollback(Some(reason.clone()));
                match self.change(&mut inner, rollback, ChangeOrigin::Guard) {
                    Ok(_) => {
                        self.shared.count_rollback(trip.threshold);
                        log::warn!("{reason}: rolled back");
                    }
                    Err(e) => {
                        log::error!("{reason}, but the rollback failed: {e}");
                        inner.state.watch = None;
                    }
                }
            }
            _ => self.advance_canary(&mut inner, &verdict, now),
        }
    }

    fn advance_canary(&self, inner: &mut Inner, verdict: &Verdict, now: u64) {
        let Some(run) = inner.canary.clone() else {
            return;
        };
        let steps = inner.config.canary.steps.clone();
        let CanaryNext::Advance(step) = canary::next(&run, &steps, verdict, now) else {
            return;
        };
        let weight = steps[step].weight;
        let mut state = inner.state.clone();
        raise_split(
            &mut state,
            canary::step_split(&run.base_split, &run.pool, weight),
        );
        keep_target(&mut state, &run.base_split);
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
        let config = Arc::clone(&inner.config);
        let command = format!("canary step {}", step + 1);
        match self.commit(
            inner,
            config,
            state,
            Change {
                command: &command,
                origin: ChangeOrigin::Canary,
                reason: &reason,
                event,
            },
        ) {
            Ok(_) => {
                inner.canary = (!last).then_some(CanaryRun {
                    step,
                    step_started_ms: now,
                    ..run
                });
            }
            Err(e) => log::error!("canary step failed: {e}"),
        }
    }

    /// Refuses a split that gives more traffic to a pool with no healthy,
    /// undrained backend — unless forced, which the audit reason records.
    fn refuse_dead_pools(
        &self,
        before: &Split,
        after: &Split,
        force: bool,
    ) -> Result<&'static str, String> {
        let table = self.shared.table();
        let dead: Vec<&str> = after
            .iter()
            .filter(|(pool, share)| **share > before.get(*pool).copied().unwrap_or(Share::ZERO))
            .filter(|(pool, _)| table.pool(pool).is_some_and(|p| !p.has_usable_backend()))
            .map(|(pool, _)| pool.as_str())
            .collect();
        match (dead.is_empty(), force) {
            (true, _) => Ok(""),
            (false, true) => Ok(" (forced: no healthy backend)"),
            (false, false) => Err(format!(
                "refused: pool {} has no healthy backend; add --force to do it anyway",
                dead.join(", ")
            )),
        }
    }

    /// The configured name of a backend given by name or resolved address.
    fn backend_name(config: &Config, pool: &str, backend: &str) -> Result<String, String> {
        let p = config
            .pools
            .get(pool)
            .ok_or_else(|| format!("no such pool \"{pool}\""))?;
        p.backends
            .iter()
            .find(|b| b.name == backend || b.addr.to_string() == backend)
            .map(|b| b.name.clone())
            .ok_or_else(|| format!("pool \"{pool}\" has no backend \"{backend}\""))
    }

    fn answer(&self, inner: &Inner, message: &str) -> Value {
        json!({
            "ok": true,
            "revision": inner.state.revision,
            "split": split_doc(&inner.state.split),
            "message": message,
        })
    }

    /// Persists and publishes one change as the next revision. Returns it.
    fn commit(
        &self,
        inner: &mut Inner,
        config: Arc<Config>,
        mut state: RuntimeState,
        change: Change<'_>,
    ) -> Result<u64, String> {
        let Change {
            command,
            origin,
            reason,
            event,
        } = change;
        if inner.handed_over {
            return Err(
                "this process is handing over to its successor (binary upgrade): \
                        send the command again in a moment"
                    .into(),
            );
        }
        state.revision = inner.state.revision.max(state.revision) + 1;
        let current = self.shared.table_arc();
        let table = RoutingTable::build(
            Arc::clone(&config),
            RuntimeView {
                revision: state.revision,
                split: &state.split,
                drained: &state.drained,
            },
            Some(&current),
        );
        let state_dir = &config.admin.state_dir;
        if let Err(e) = state.save(state_dir) {
            let message = format!("cannot save state in {}: {e}", state_dir.display());
            // A guard rollback protects live traffic: it goes into force even
            // if it cannot be persisted. Any other change is refused.
            if origin != ChangeOrigin::Guard {
                return Err(format!("change refused: {message}"));
            }
            log::error!("{message}; the guard's rollback is applied anyway");
        }
        let record = AuditRecord {
            time: rfc3339_now(),
            revision: state.revision,
            command: command.to_string(),
            origin: origin.label().to_string(),
            uid: origin.uid(),
            reason: reason.to_string(),
            split: split_doc(&state.split),
        };
        if let Err(e) = inner.audit.append(&record) {
            log::error!("could not append to the audit log: {e}");
        }
        self.publisher.publish(table);
        self.notifier.send(json!({
            "event": event,
            "revision": record.revision,
            "time": record.time,
            "split": record.split,
            "reason": record.reason,
            "origin": record.origin,
        }));
        log::info!(
            "revision {}: {command} ({}) by {} — split {}",
            state.revision,
            reason,
            origin.label(),
            describe_split(&state.split)
        );
        inner.state = state;
        inner.config = config;
        Ok(inner.state.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(split: &str) -> Config {
        let text = format!(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.green]\nbackends = [\"127.0.0.1:9002\"]\n[split]\n{split}\n"
        );
        config::parse(&text, Path::new("/tmp")).unwrap()
    }

    fn split(blue: u16, green: u16) -> Split {
        [
            ("blue".to_string(), Share(blue * 100)),
            ("green".to_string(), Share(green * 100)),
        ]
        .into()
    }

    #[test]
    fn first_start_takes_the_file_split() {
        let (state, reason) = reconcile(&config("blue = 100"), None);
        assert_eq!(state.split, split(100, 0));
        assert!(reason.is_some());
    }

    #[test]
    fn runtime_split_survives_while_the_file_split_is_unchanged() {
        let file = config("blue = 100");
        let saved = RuntimeState {
            revision: 9,
            split: split(90, 10),
            file_split: split(100, 0),
            drained: Default::default(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
        };
        let (state, reason) = reconcile(&file, Some(saved.clone()));
        assert_eq!(state.split, split(90, 10));
        assert_eq!(reason, None);
        assert_eq!(state.revision, 9);
    }

    #[test]
    fn a_changed_file_split_wins() {
        let file = config("blue = 50\ngreen = 50");
        let saved = RuntimeState {
            revision: 9,
            split: split(90, 10),
            file_split: split(100, 0),
            drained: [("blue".to_string(), "10.9.9.9:1".to_string())].into(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
        };
        let (state, reason) = reconcile(&file, Some(saved));
        assert_eq!(state.split, split(50, 50));
        assert_eq!(state.file_split, split(50, 50));
        assert!(
            state.drained.is_empty(),
            "drain of a backend not in the file dropped"
        );
        assert!(reason.unwrap().contains("[split] changed"));
        assert!(
            state.rollback_target.is_some(),
            "green rose: 90/10 is the target"
        );
    }
}
