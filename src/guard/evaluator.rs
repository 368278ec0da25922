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

pub struct GuardService {
    controller: Arc<Controller>,
}

impl GuardService {
    pub fn new(controller: Arc<Controller>) -> Self {
        GuardService { controller }
    }
}

#[async_trait]
impl BackgroundService for GuardService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let controller = Arc::clone(&self.controller);
            // Applying a rollback fsyncs: keep it off the timer's thread.
            let _ = tokio::task::spawn_blocking(move || controller.guard_tick()).await;
        }
    }
}
