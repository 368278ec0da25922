//! How a process stops: SIGTERM ([`Controller::stopping`]) and the
//! hand-over to a successor in a binary upgrade ([`Controller::hand_over`]).
//! Each saves when the process began to stop, so the next one credits a
//! canary step with the hold it served and not with the time it was down.

use super::controller::{Controller, Inner};
use super::state::SavedCanary;
use crate::clock::Now;

impl Controller {
    /// Freezes the runtime state for a successor process: once this returns
    /// no change is in progress and none will be made, so the state file the
    /// successor reads is the last word. Used before listening sockets are
    /// handed over in a binary upgrade.
    pub fn hand_over(&self, now: Now) {
        let mut inner = self.inner.lock();
        inner.handed_over = true;
        Self::save_stopping(&mut inner, now);
    }

    /// SIGTERM: the process stops soon. Saves when it began to, so that the
    /// next start credits a canary step with the hold it served until now
    /// and not with the time the proxy was down. The guard still acts
    /// while in-flight requests drain.
    pub fn stopping(&self, now: Now) {
        Self::save_stopping(&mut self.inner.lock(), now);
    }

    fn save_stopping(inner: &mut Inner, now: Now) {
        inner.state.stopped_at_ms = Some(now.wall.0);
        inner.state.canary = inner.canary.as_ref().map(|run| SavedCanary::of(run, now));
        let dir = &inner.config.admin.state_dir;
        if let Err(e) = inner.state.save(dir) {
            log::error!("cannot save state in {}: {e}", dir.display());
        }
    }
}
