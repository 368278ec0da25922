//! Config reloads (file watch, SIGHUP, `ctl reload`): read and validate
//! the file off the writer's lock, then reconcile it with the runtime state
//! and commit it like any change. An invalid file changes nothing and is
//! announced (`reload_failed`).

use std::sync::Arc;

use super::audit::{rfc3339, ChangeOrigin};
use super::config_diff;
use super::controller::{Commit, Controller};
use super::error::Refusal;
use super::reconcile::{keep_restart_only_settings, reconcile};
use super::state::split_doc;
use crate::clock::Now;
use crate::config;
use crate::protocol::answer::{Event, Reloaded};

impl Controller {
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
                self.notifier.send(Event::plain(
                    "reload_failed",
                    inner.state.revision,
                    rfc3339(now.wall),
                    split_doc(&inner.state.split),
                    text.trim_end().to_string(),
                    origin.label(),
                ));
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
            // A file whose only changes need a restart is not "unchanged":
            // the answer below says what waits for the restart.
            let message = if restart_needed.is_empty() {
                "config unchanged"
            } else {
                "nothing to apply now"
            };
            Reloaded {
                ok: true,
                changed: false,
                revision: inner.state.revision,
                split: None,
                message: message.into(),
                restart_needed: Vec::new(),
            }
        } else {
            let changes = config_diff::changes(&inner.config, &new_config);
            let (state, reason) = reconcile(&new_config, Some(inner.state.clone()), now.wall);
            let what = if changes.is_empty() {
                String::new()
            } else {
                format!(" ({})", changes.join("; "))
            };
            let reason = match reason {
                Some(split) => format!("config reloaded{what}; {split}"),
                None => format!("config reloaded{what}; runtime split kept"),
            };
            let reload = Commit::new("reload", origin, &reason, "reload");
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
}
