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
use super::joining::starting_state;
use super::judge_state::JudgeState;
use super::reconcile::reconcile;
use super::state::{describe_split, split_doc, RuntimeState, SavedCanary};
use super::status::{self, Held};
use super::writeback::Pending;
use crate::clock::Now;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::guard::canary::CanaryRun;
use crate::notify::{EventQueue, Notifier};
use crate::protocol::answer::{Answer, Applied, Event, GuardEvidence, History, Status};
use crate::protocol::{CanaryCommand, Command};
use crate::routing::{Discovered, RoutingTable, RuntimeView};
use crate::shared::{Shared, TablePublisher};

pub struct Controller {
    pub(super) shared: Arc<Shared>,
    /// The only writer of the routing table.
    pub(super) publisher: TablePublisher,
    pub(super) config_path: PathBuf,
    pub(super) notifier: Notifier,
    pub(super) inner: Mutex<Inner>,
    /// One reload at a time, from reading the file to publishing it: two
    /// overlapping reloads (watcher and `ctl reload`) could otherwise
    /// publish an older read of the file after a newer one. Separate from
    /// `inner` so reading the file (which resolves host names) never holds
    /// up status, commands or the guard.
    pub(super) reloading: Mutex<()>,
    /// Fleet mode: who leads and the fleet's sums (`cluster::election`).
    /// Set once at start when `[cluster]` is configured; the judge reads
    /// it to decide whose counts it judges, or whether it judges at all.
    pub(super) decision: std::sync::OnceLock<Arc<crate::cluster::election::Decision>>,
    /// Fleet mode (`[cluster]`): etcd, the link's state and the role.
    pub(super) cluster: Option<Arc<Cluster>>,
}

pub(super) struct Inner {
    pub(super) config: Arc<Config>,
    pub(super) state: RuntimeState,
    pub(super) audit: AuditLog,
    /// Fleet mode: changes applied here while etcd was unreachable.
    pub(super) pending: Vec<Pending>,
    /// A canary run in progress. Callers set it to what a change makes of
    /// it *before* [`Controller::commit`], which saves it with the change.
    pub(super) canary: Option<CanaryRun>,
    /// The judge's tests of the watch in force and its last decision.
    pub(super) judge: JudgeState,
    /// A successor process is taking over (binary upgrade): it has read or
    /// is about to read the state file, so this process changes nothing.
    pub(super) handed_over: bool,
    /// The addresses of the `dns` backends (`discovered`): runtime only,
    /// found again after a restart.
    pub(super) discovered: Discovered,
}

/// What one committed change is, for the audit record and the webhook.
pub(super) struct Commit<'a> {
    pub(super) command: &'a str,
    pub(super) origin: ChangeOrigin,
    pub(super) reason: &'a str,
    pub(super) event: &'a str,
    /// For the webhook's structured fields.
    pub(super) pool: Option<&'a str>,
    pub(super) evidence: Option<GuardEvidence>,
    /// Fleet mode: the command to replay if etcd is unreachable and this
    /// change may still act here alone (toward safety); `None`: refused.
    pub(super) writeback: Option<Command>,
}

impl<'a> Commit<'a> {
    pub(super) fn new(
        command: &'a str,
        origin: ChangeOrigin,
        reason: &'a str,
        event: &'a str,
    ) -> Self {
        Commit {
            command,
            origin,
            reason,
            event,
            pool: None,
            evidence: None,
            writeback: super::writeback::guard_writeback(origin, reason),
        }
    }
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
        let cluster = config.cluster.as_ref().map(Cluster::start).transpose()?;
        let lost = saved.is_none() && cluster.is_none();
        let (mut state, reason) = match &cluster {
            Some(cluster) => starting_state(cluster, &config, saved, &audit, now),
            None => reconcile(&config, saved, now.wall),
        };
        let canary = canary_run::resume(&config, &state, now);
        state.stopped_at_ms = None;
        if lost {
            // Without a state file, continue the audit log's numbering so a
            // revision number never means two different changes.
            state.revision = audit.last_revision().unwrap_or(0);
        }
        let config = Arc::new(config);
        let none = Discovered::default();
        let view = RuntimeView::new(state.revision, &state.split, &state.drained, &none);
        let table = RoutingTable::build(Arc::clone(&config), view, None);
        let (shared, publisher) = Shared::new(table);
        let (notifier, events) = Notifier::new(Arc::clone(&shared));
        let controller = Arc::new(Controller {
            shared,
            publisher,
            config_path: config_path.to_path_buf(),
            notifier,
            reloading: Mutex::new(()),
            decision: std::sync::OnceLock::new(),
            cluster: cluster.clone(),
            inner: Mutex::new(Inner {
                audit,
                pending: Vec::new(),
                config: Arc::clone(&config),
                state: state.clone(),
                canary,
                judge: JudgeState::default(),
                handed_over: false,
                discovered: Discovered::default(),
            }),
        });
        match reason {
            Some(reason) => {
                let mut inner = controller.inner.lock();
                let start = Commit::new("start", ChangeOrigin::Startup, &reason, "start");
                controller.commit(&mut inner, config, state, start, now)?;
            }
            None => log::info!(
                "restored runtime state: revision {}, split {}",
                state.revision,
                describe_split(&state.split)
            ),
        }
        if let Some(cluster) = &cluster {
            let weak = Arc::downgrade(&controller);
            crate::cluster::watch::spawn(cluster, weak);
        }
        Ok((controller, events))
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
                Command::ReopenLogs => Answer::LogsReopened(status::reopen_logs()?),
                Command::Cluster => Answer::Cluster(Box::new(self.cluster_answer(now)?)),
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

    /// The last `n` audit records, oldest first: the fleet's in fleet mode.
    pub fn history(&self, n: usize) -> Vec<AuditRecord> {
        (self.fleet_history(n)).unwrap_or_else(|| self.inner.lock().audit.last(n))
    }

    /// The `status` answer at `now`.
    pub fn status(&self, now: Now) -> Status {
        let inner = self.inner.lock();
        let held = Held {
            config: &inner.config,
            config_path: &self.config_path,
            state: &inner.state,
            canary: inner.canary.as_ref(),
            judge: &inner.judge,
        };
        let mut status = status::status(&self.shared.table(), &held, now);
        status.cluster = self.cluster_status(&inner);
        status
    }

    /// Plans one change (see `change` and `canary_run`) and commits it.
    pub(super) fn change(
        &self,
        inner: &mut Inner,
        command: Command,
        origin: ChangeOrigin,
        now: Now,
    ) -> Result<Applied, Refusal> {
        let (config, table) = (Arc::clone(&inner.config), self.shared.table_arc());
        let ctx = Ctx::new(&config, &inner.state, &table, origin, now);
        // Canary events name their pool (the run may be gone after the plan).
        let canary_pool = match &command {
            Command::Canary(CanaryCommand::Start(pool, _)) => Some(pool.clone()),
            Command::Canary(_) => inner.canary.as_ref().map(|r| r.pool.clone()),
            _ => None,
        };
        let mut plan = match &command {
            Command::Split(named, force) => change::split(&ctx, named, *force),
            Command::Cutover(pool, force) => change::cutover(&ctx, pool, *force),
            Command::Rollback(reason) => change::rollback(&ctx, reason.as_deref()),
            Command::Drain {
                pool,
                backend,
                force,
            } => change::drain(&ctx, pool, backend, true, *force),
            Command::Undrain { pool, backend } => change::drain(&ctx, pool, backend, false, false),
            Command::Undo(revision) => change::undo(&ctx, &inner.audit, *revision),
            Command::GuardPause(pause) => change::guard_pause(&ctx, *pause),
            Command::Canary(action) => canary_run::command(&ctx, &mut inner.canary, action),
            Command::Status
            | Command::History(_)
            | Command::Reload
            | Command::ReopenLogs
            | Command::Cluster => Err(Refusal::Internal("internal: not a change".into())),
        }?;
        // Asking for the split already in force changes nothing: no
        // revision, no audit record, and a canary in progress goes on.
        if command.sets_split() && plan.state.split == inner.state.split {
            return Ok(Self::applied(
                inner,
                "unchanged: that split is already in force",
            ));
        }
        let overridden =
            change::override_canary(&mut plan, inner.canary.as_ref(), &command, origin);
        if let Some(label) = plan.count_rollback {
            self.shared.count_rollback(label);
        }
        let ended = if plan.ends_canary {
            inner.canary.take()
        } else {
            None
        };
        let text = command.to_string();
        self.commit(
            inner,
            config,
            plan.state,
            Commit {
                pool: canary_pool.as_deref(),
                writeback: command
                    .acts_locally_without_fleet()
                    .then(|| command.clone()),
                ..Commit::new(&text, origin, &plan.reason, plan.event)
            },
            now,
        )?;
        if let (Some(run), Some(why)) = (ended, overridden) {
            self.announce(
                inner,
                "canary_aborted",
                why,
                origin.label(),
                run.pool,
                None,
                now,
            );
        }
        Ok(Self::applied(inner, &plan.reason))
    }

    /// Sends an event that is not a revision of its own (it follows one, or
    /// changes nothing): the split and revision in force, about `pool`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn announce(
        &self,
        inner: &Inner,
        event: &str,
        reason: String,
        origin: &str,
        pool: String,
        evidence: Option<GuardEvidence>,
        now: Now,
    ) {
        let split = split_doc(&inner.state.split);
        let mut e = Event::plain(
            event,
            inner.state.revision,
            rfc3339(now.wall),
            split,
            reason,
            origin,
        );
        e.pool = Some(pool);
        e.guard = evidence;
        self.notifier.send(e);
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
            pool,
            evidence,
            writeback,
        } = commit;
        if inner.handed_over {
            return Err(Refusal::HandingOver);
        }
        state.revision = inner.state.revision.max(state.revision) + 1;
        // The canary run as the caller left it for this change (started,
        // stepped, paused, or ended) is saved with it.
        state.canary = inner.canary.as_ref().map(|run| SavedCanary::of(run, now));
        let record = AuditRecord {
            time: rfc3339(now.wall),
            revision: state.revision,
            command: command.to_string(),
            origin: origin.label().to_string(),
            uid: origin.uid(),
            reason: reason.to_string(),
            split: split_doc(&state.split),
            instance: self.cluster.as_ref().map(|c| c.name().to_string()),
        };
        self.commit_to_fleet(inner, &mut state, &record, origin, writeback.as_ref(), now)?;
        let current = self.shared.table_arc();
        let found = &inner.discovered;
        let view = RuntimeView::new(state.revision, &state.split, &state.drained, found);
        let table = RoutingTable::build(Arc::clone(&config), view, Some(&current));
        let state_dir = &config.admin.state_dir;
        if let Err(source) = state.save(state_dir) {
            // A guard rollback protects live traffic: it goes into force even
            // if it cannot be persisted; so does a change etcd has committed
            // (the file is a cache then). Any other change is refused.
            if origin != ChangeOrigin::Guard && self.cluster.is_none() {
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
            pool: pool.map(str::to_string),
            guard: evidence,
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
