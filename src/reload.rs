//! Live config reload: a file watcher and SIGHUP, both ending in
//! [`Controller::reload`].
//!
//! The watcher watches the config file's *directory*, not the file: editors
//! save by writing a new file and renaming it over the old one, and
//! Kubernetes ConfigMaps swap a `..data` symlink — a watch on the file itself
//! would miss both. Events are debounced (a burst of writes becomes one
//! reload); reloading an unchanged file is a no-op, so spurious events cost
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::control::{ChangeOrigin, Controller};

const DEBOUNCE: Duration = Duration::from_millis(200);

pub struct ReloadService {
    controller: Arc<Controller>,
}

impl ReloadService {
    pub fn new(controller: Arc<Controller>) -> Self {
        ReloadService { controller }
    }
}

/// Does an event on `path` concern the config file `config`?
fn concerns(path: &Path, config: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    path.file_name() == config.file_name() || name.starts_with("..")
}

fn watch(config: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let config_path: PathBuf = config.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event.paths.iter().any(|p| concerns(p, &config_path)) {
                let _ = tx.try_send(());
            }
        }
    })?;
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::channel::<()>(16);
        // Kept alive for as long as this service runs.
        let _watcher = match watch(self.controller.config_path(), tx) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch the config file ({e}); reload with SIGHUP or `ctl reload`"
                );
                None
            }
        };
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot handle SIGHUP: {e}");
                None
            }
        };
        loop {
            let origin = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    // Let the burst settle, then drop what queued up meanwhile.
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    ChangeOrigin::File
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    ChangeOrigin::Signal
                }
            };
            let controller = Arc::clone(&self.controller);
            // The result is logged by the controller; nothing to answer here.
            let _ = tokio::task::spawn_blocking(move || controller.reload(origin)).await;
        }
    }
}
