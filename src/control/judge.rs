//! The guard's clock: every 100 ms (the SPEC asks for at least every
//! 250 ms) it asks the controller to judge the watched pool and to move a
//! canary along. Judging reads the per-pool windows (a few thousand relaxed
//! loads) and takes the controller's lock — never anything on the request
//! path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::control::Controller;

pub const TICK: Duration = Duration::from_millis(100);

type Judge = Arc<dyn Fn() + Send + Sync>;

pub struct GuardService {
    judge: Judge,
}

impl GuardService {
    pub fn new(controller: Arc<Controller>) -> Self {
        GuardService {
            judge: Arc::new(move || controller.guard_tick()),
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
