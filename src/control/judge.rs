//! The judge: the guard's tick and what the controller does with the
//! verdict. Every 100 ms (the SPEC asks for at least every 250 ms) the
//! tick reads the clock once and asks the controller to judge the watched
//! pool at that moment — roll back on a trip, move a canary along on a pass.
//! The verdict itself is the pure `guard::decide`. Judging reads the
//! per-pool windows (a few thousand relaxed loads) and takes the
//! controller's lock — never anything on the request path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::audit::ChangeOrigin;
use super::canary_run;
use super::change::Ctx;
use super::controller::{Commit, Controller, Inner};
use crate::clock::Now;
use crate::guard::{decide, Observation, Verdict};
use crate::protocol::Command;

pub const TICK: Duration = Duration::from_millis(100);

type Judge = Arc<dyn Fn() + Send + Sync>;

pub struct GuardService {
    judge: Judge,
}

impl GuardService {
    pub fn new(controller: Arc<Controller>) -> Self {
        GuardService {
            judge: Arc::new(move || controller.guard_tick(Now::read())),
        }
    }
}

/// Calls `judge` every [`TICK`] until `shutdown` fires.
async fn run(judge: Judge, mut shutdown: ShutdownWatch) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let judge = Arc::clone(&judge);
        // Applying a rollback fsyncs: keep it off the timer's thread.
        let _ = tokio::task::spawn_blocking(move || judge()).await;
    }
}

#[async_trait]
impl BackgroundService for GuardService {
    async fn start(&self, shutdown: ShutdownWatch) {
        run(Arc::clone(&self.judge), shutdown).await;
    }
}

impl Controller {
    /// One guard evaluation at `now`: judge the watched pool, roll back on
    /// a trip, move a canary along on a pass.
    pub fn guard_tick(&self, now: Now) {
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
        let candidate = pool.stats.window(now.mono.0);
        let baseline = watch
            .baseline
            .as_deref()
            .and_then(|b| table.pool(b))
            .map(|p| p.stats.window(now.mono.0));
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
        let verdict = decide(&observation, &config.guard, watch.since_ms, now.wall.0);
        inner.verdict = Some(verdict.clone());
        match &verdict {
            Verdict::NotWatching if inner.canary.is_none() => {
                log::info!("guard: watch of pool {} ended with no trip", watch.pool);
                inner.state.watch = None;
            }
            Verdict::Trip(trip) => {
                let reason = trip.reason(&watch.pool);
                let rollback = Command::Rollback(Some(reason.clone()));
                match self.change(&mut inner, rollback, ChangeOrigin::Guard, now) {
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

    fn advance_canary(&self, inner: &mut Inner, verdict: &Verdict, now: Now) {
        let Some(run) = inner.canary.clone() else {
            return;
        };
        let config = Arc::clone(&inner.config);
        let table = self.shared.table_arc();
        let ctx = Ctx {
            config: &config,
            state: &inner.state,
            table: &table,
            origin: ChangeOrigin::Canary,
            now,
        };
        let Some(step) = canary_run::advance(&ctx, &run, verdict) else {
            return;
        };
        let commit = Commit {
            command: &step.command,
            origin: ChangeOrigin::Canary,
            reason: &step.plan.reason,
            event: step.plan.event,
        };
        match self.commit(inner, config, step.plan.state, commit, now) {
            Ok(_) => inner.canary = step.run,
            Err(e) => log::error!("canary step failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn judges_at_least_every_250_ms_and_stops_on_shutdown() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&calls);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
            shutdown,
        ));
        // Ten simulated seconds pass instantly with paused time.
        for _ in 0..100 {
            tokio::time::sleep(TICK).await;
            tokio::task::yield_now().await;
        }
        let n = calls.load(Ordering::SeqCst);
        assert!(
            n >= 40,
            "judged {n} times in 10 s; the SPEC asks for at least every 250 ms"
        );
        let _ = stop.send(true);
        task.await.unwrap();
        let after = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            after,
            "no judging after shutdown"
        );
    }
}
