//! The controller: the one writer of the routing table.
//!
//! Admin commands, config reloads (file watch, SIGHUP, `reload`), the guard
//! and canary runs all go through [`Controller::apply`] (or, for the guard,
//! the same `change` and `commit`). Each change is planned (`change`,
//! `canary_run`), turned into a complete new `RoutingTable`, persisted
//! (state file, then audit record) and only then published with one store
//! by the one [`TablePublisher`]. A change that cannot be persisted is
//! refused, so what is on disk never lags what is in force. A mutex
//! serialises writers; the request path never touches it.
//!
//! Time is a value: every entry point takes a [`Now`], read once at the
//! edge (the admin socket, the judge's tick, the reload watcher).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::audit::{rfc3339, AuditLog, AuditRecord, ChangeOrigin};
use super::canary_run;
use super::change::{self, Ctx};
use super::error::{Refusal, StartError};
use super::reconcile::{keep_restart_only_settings, reconcile};
use super::state::{describe_split, split_doc, RuntimeState};
use super::status::{self, Held};
use crate::clock::Now;
use crate::config::{self, Config};
use crate::guard::canary::CanaryRun;
use crate::guard::Verdict;
use crate::notify::{EventQueue, Notifier};
use crate::protocol::answer::{Answer, Applied, Event, History, Reloaded, Status};
use crate::protocol::Command;
use crate::routing::{RoutingTable, RuntimeView};
use crate::shared::{Shared, TablePublisher};

pub struct Controller {
    pub(super) shared: Arc<Shared>,
    /// The only writer of the routing table.
    publisher: TablePublisher,
    config_path: PathBuf,
    notifier: Notifier,
    pub(super) inner: Mutex<Inner>,
    /// One reload at a time, from reading the file to publishing it: two
    /// overlapping reloads (watcher and `ctl reload`) could otherwise
    /// publish an older read of the file after a newer one. Separate from
    /// `inner` so reading the file (which resolves host names) never holds
    /// up status, commands or the guard.
    reloading: Mutex<()>,
}

pub(super) struct Inner {
    pub(super) config: Arc<Config>,
    pub(super) state: RuntimeState,
    audit: AuditLog,
    /// A canary run in progress (kept in memory: a restart ends it, leaving
    /// the split of the step it had reached).
    pub(super) canary: Option<CanaryRun>,
    /// The guard's latest verdict on the watched pool, for `status`.
    pub(super) verdict: Option<Verdict>,
    /// A successor process is taking over (binary upgrade): it has read or
    /// is about to read the state file, so this process changes nothing.
    pub(super) handed_over: bool,
}

/// What one committed change is, for the audit record and the webhook.
pub(super) struct Commit<'a> {
    pub(super) command: &'a str,
    pub(super) origin: ChangeOrigin,
    pub(super) reason: &'a str,
    pub(super) event: &'a str,
}

impl Controller {
    /// [`Controller::start_at`] now: the process's start is an edge.
    pub fn start(
        config_path: &Path,
        config: Config,
    ) -> Result<(Arc<Controller>, EventQueue), StartError> {
        Self::start_at(config_path, config, Now::read())
    }

    /// Loads the saved state, reconciles it with `config`, builds and
    /// publishes the first table. Fails only if the state dir is unusable.
    pub fn start_at(
        config_path: &Path,
        config: Config,
        now: Now,
    ) -> Result<(Arc<Controller>, EventQueue), StartError> {
        let state_dir = config.admin.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|source| StartError::StateDir {
            dir: state_dir.clone(),
            source,
        })?;
        super::state::remove_stale_temp_files(&state_dir);
        let saved = RuntimeState::load_or_set_aside(&state_dir);
        let audit = AuditLog::new(&state_dir);
        let lost = saved.is_none();
        let (mut state, reason) = reconcile(&config, saved, now.wall);
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
                let start = Commit {
                    command: "start",
                    origin: ChangeOrigin::Startup,
                    reason: &reason,
                    event: "start",
                };
                controller.commit(&mut inner, config, state, start, now)?;
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

    /// Carries out one command at `now`; the answer is what the socket
    /// returns. Read-only commands ([`Command::is_mutating`]) never reach
    /// the writer's path.
    pub fn apply(
        &self,
        command: Command,
        origin: ChangeOrigin,
        now: Now,
    ) -> Result<Answer, Refusal> {
        if !command.is_mutating() {
            return Ok(match command {
                Command::History(n) => Answer::History(History {
                    ok: true,
                    history: self.history(n),
                }),
                _ => Answer::Status(Box::new(self.status(now))),
            });
        }
        match command {
            Command::Reload => self.reload(origin, now).map(Answer::Reloaded),
            command => {
                let mut inner = self.inner.lock();
                self.change(&mut inner, command, origin, now)
                    .map(Answer::Applied)
            }
        }
    }

    /// The last `n` audit records, oldest first.
    pub fn history(&self, n: usize) -> Vec<AuditRecord> {
        self.inner.lock().audit.last(n)
    }

    /// The `status` answer at `now`.
    pub fn status(&self, now: Now) -> Status {
        let inner = self.inner.lock();
        let held = Held {
            config: &inner.config,
            config_path: &self.config_path,
            state: &inner.state,
            canary: inner.canary.as_ref(),
            verdict: inner.verdict.as_ref(),
        };
        status::status(&self.shared.table(), &held, now)
    }

    /// Reloads only if the file differs from the config in force, without
    /// counting an identical file as a reload: the watcher's catch-up for
    /// edits made between the start-up load and the watch.
    pub fn reload_if_changed(&self, origin: ChangeOrigin, now: Now) {
        let running = self.config();
        if let Ok(mut on_disk) = config::load(&self.config_path) {
            keep_restart_only_settings(&running, &mut on_disk);
            if on_disk == *running {
                return;
            }
        }
        // Changed or now invalid: a real reload, counted and logged.
        let _ = self.reload(origin, now);
    }

    /// Re-reads the config file. An invalid file changes nothing.
    pub fn reload(&self, origin: ChangeOrigin, now: Now) -> Result<Reloaded, Refusal> {
        let _one_at_a_time = self.reloading.lock();
        let mut new_config = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(errors) => {
                self.shared.count_reload(false);
                let text = errors.to_string();
                let inner = self.inner.lock();
                self.notifier.send(Event {
                    event: "reload_failed".into(),
                    revision: inner.state.revision,
                    time: rfc3339(now.wall),
                    split: split_doc(&inner.state.split),
                    reason: text.trim_end().to_string(),
                    origin: origin.label().to_string(),
                });
                drop(inner);
                log::error!(
                    "reload of {} rejected, the running config stays:\n{text}",
                    self.config_path.display()
                );
                return Err(Refusal::ConfigRejected(text.trim_end().to_string()));
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
            Reloaded {
                ok: true,
                changed: false,
                revision: inner.state.revision,
                split: None,
                message: "config unchanged".into(),
                restart_needed: Vec::new(),
            }
        } else {
            let (state, reason) = reconcile(&new_config, Some(inner.state.clone()), now.wall);
            let reason = reason.unwrap_or_else(|| "config reloaded; runtime split kept".into());
            let reload = Commit {
                command: "reload",
                origin,
                reason: &reason,
                event: "reload",
            };
            let revision = self.commit(&mut inner, Arc::new(new_config), state, reload, now)?;
            log::info!("config reloaded: revision {revision} ({reason})");
            let applied = Self::applied(&inner, &reason);
            Reloaded {
                ok: true,
                changed: true,
                revision: applied.revision,
                split: Some(applied.split),
                message: applied.message,
                restart_needed: Vec::new(),
            }
        };
        if !restart_needed.is_empty() {
            // Said in the answer too: `ctl reload` users don't read the log.
            answer.message = format!(
                "{}; needs a restart to take effect: {}",
                answer.message,
                restart_needed.join(", ")
            );
            answer.restart_needed = restart_needed.iter().map(|s| s.to_string()).collect();
        }
        Ok(answer)
    }

    /// Plans one change (see `change` and `canary_run`) and commits it.
    pub(super) fn change(
        &self,
        inner: &mut Inner,
        command: Command,
        origin: ChangeOrigin,
        now: Now,
    ) -> Result<Applied, Refusal> {
        let config = Arc::clone(&inner.config);
        let table = self.shared.table_arc();
        let ctx = Ctx {
            config: &config,
            state: &inner.state,
            table: &table,
            origin,
            now,
        };
        let plan = match &command {
            Command::Split(named, force) => change::split(&ctx, named, *force),
            Command::Cutover(pool, force) => change::cutover(&ctx, pool, *force),
            Command::Rollback(reason) => change::rollback(&ctx, reason.as_deref()),
            Command::Drain { pool, backend } => change::drain(&ctx, pool, backend, true),
            Command::Undrain { pool, backend } => change::drain(&ctx, pool, backend, false),
            Command::Undo(revision) => change::undo(&ctx, &inner.audit, *revision),
            Command::GuardPause(pause) => change::guard_pause(&ctx, *pause),
            Command::Canary(action) => canary_run::command(&ctx, &mut inner.canary, action),
            Command::Status | Command::History(_) | Command::Reload => {
                Err(Refusal::Internal("internal: not a change".into()))
            }
        }?;
        if let Some(label) = plan.count_rollback {
            self.shared.count_rollback(label);
        }
        if plan.ends_canary && inner.canary.take().is_some() {
            log::info!("canary aborted by the rollback");
        }
        let commit = Commit {
            command: &command.to_string(),
            origin,
            reason: &plan.reason,
            event: plan.event,
        };
        self.commit(inner, config, plan.state, commit, now)?;
        Ok(Self::applied(inner, &plan.reason))
    }

    fn applied(inner: &Inner, message: &str) -> Applied {
        Applied {
            ok: true,
            revision: inner.state.revision,
            split: split_doc(&inner.state.split),
            message: message.to_string(),
        }
    }

    /// Persists and publishes one change as the next revision. Returns it.
    pub(super) fn commit(
        &self,
        inner: &mut Inner,
        config: Arc<Config>,
        mut state: RuntimeState,
        commit: Commit<'_>,
        now: Now,
    ) -> Result<u64, Refusal> {
        let Commit {
            command,
            origin,
            reason,
            event,
        } = commit;
        if inner.handed_over {
            return Err(Refusal::HandingOver);
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
        if let Err(source) = state.save(state_dir) {
            // A guard rollback protects live traffic: it goes into force even
            // if it cannot be persisted. Any other change is refused.
            if origin != ChangeOrigin::Guard {
                return Err(Refusal::Persist {
                    dir: state_dir.clone(),
                    source,
                });
            }
            log::error!(
                "cannot save state in {}: {source}; the guard's rollback is applied anyway",
                state_dir.display()
            );
        }
        let record = AuditRecord {
            time: rfc3339(now.wall),
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
        self.notifier.send(Event {
            event: event.to_string(),
            revision: record.revision,
            time: record.time,
            split: record.split,
            reason: record.reason,
            origin: record.origin,
        });
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
