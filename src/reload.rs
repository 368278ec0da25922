//! Live config reload: a file watcher and SIGHUP, both ending in
//! [`Controller::reload`].
//!
//! The watcher watches the config file's *directory*, not the file: editors
//! save by writing a new file and renaming it over the old one, and
//! Kubernetes ConfigMaps swap a `..data` symlink — a watch on the file itself
//! would miss both. Events are debounced (a burst of writes becomes one
//! reload); reloading an unchanged file is a no-op, so spurious events cost
//! nothing.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::clock::Now;
use crate::control::{ChangeOrigin, Controller};

/// Quiet time after the last event before reloading: editors and
/// `kubectl` touch the file several times per save.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A file rewritten without pause still gets reloaded this often.
const MAX_DEFER: Duration = Duration::from_secs(2);

pub struct ReloadService {
    controller: Arc<Controller>,
}

impl ReloadService {
    pub fn new(controller: Arc<Controller>) -> Self {
        ReloadService { controller }
    }
}

/// Where the config file's content can change, and which names there count.
///
/// Always the file's own directory (save-by-rename; a Kubernetes ConfigMap
/// swapping its `..data` symlink). If the file is a symlink into another
/// directory, that directory too, since edits of the target do not touch
/// the link — re-resolved after every reload, as the link may move.
#[derive(Debug, Clone, PartialEq)]
struct Targets {
    dirs: Vec<PathBuf>,
    names: Vec<OsString>,
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Targets {
    fn of(config: &Path) -> Targets {
        let own_dir = parent_dir(config);
        let mut targets = Targets {
            dirs: vec![own_dir.clone()],
            names: config
                .file_name()
                .map(OsStr::to_os_string)
                .into_iter()
                .collect(),
        };
        if let Ok(real) = std::fs::canonicalize(config) {
            let real_dir = parent_dir(&real);
            let same_dir = std::fs::canonicalize(&own_dir).is_ok_and(|d| d == real_dir);
            // Inside a `..timestamp` dir of a ConfigMap: `..data` covers it.
            let configmap = real_dir
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(".."));
            if !same_dir && !configmap {
                targets.dirs.push(real_dir);
            }
            if let Some(name) = real.file_name() {
                if !targets.names.iter().any(|n| n == name) {
                    targets.names.push(name.to_os_string());
                }
            }
        }
        targets
    }

    /// Does an event on `path` concern the config file?
    fn concerns(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        self.names.iter().any(|n| n == name) || name.to_str().is_some_and(|n| n.starts_with(".."))
    }
}

/// The watcher and what it watches; `refresh` follows a moved symlink.
struct ConfigWatch {
    watcher: notify::RecommendedWatcher,
    targets: Arc<Mutex<Targets>>,
    config: PathBuf,
    tx: mpsc::Sender<()>,
}

impl ConfigWatch {
    fn start(config: &Path, tx: mpsc::Sender<()>) -> notify::Result<ConfigWatch> {
        let targets = Arc::new(Mutex::new(Targets {
            dirs: Vec::new(),
            names: Vec::new(),
        }));
        let seen = Arc::clone(&targets);
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let targets = seen.lock();
                if event.paths.iter().any(|p| targets.concerns(p)) {
                    // Full channel: a reload is pending anyway.
                    let _ = events.try_send(());
                }
            }
        })?;
        let mut watch = ConfigWatch {
            watcher,
            targets,
            config: config.to_path_buf(),
            tx,
        };
        watch.refresh()?;
        Ok(watch)
    }

    /// Watches the directories the config file now lives in.
    fn refresh(&mut self) -> notify::Result<()> {
        let new = Targets::of(&self.config);
        let old = std::mem::replace(&mut *self.targets.lock(), new.clone());
        for dir in old.dirs.iter().filter(|d| !new.dirs.contains(d)) {
            let _ = self.watcher.unwatch(dir);
        }
        for (i, dir) in new.dirs.iter().enumerate() {
            if old.dirs.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                // An edit made there between the link moving and this watch
                // went unseen: check the file once more.
                Ok(()) if !old.dirs.is_empty() => {
                    let _ = self.tx.try_send(());
                }
                Ok(()) => {}
                // Only the file's own directory is essential.
                Err(e) if i == 0 => return Err(e),
                Err(e) => log::warn!("cannot watch {}: {e}", dir.display()),
            }
        }
        Ok(())
    }
}

/// Waits until events stop for DEBOUNCE (or MAX_DEFER has passed), so a
/// burst of writes becomes one reload of the finished file.
async fn settle(rx: &mut mpsc::Receiver<()>) {
    let deadline = tokio::time::Instant::now() + MAX_DEFER;
    while let Ok(Some(())) = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + DEBOUNCE),
        rx.recv(),
    )
    .await
    {}
}

/// SIGHUP's default action ends the process, pingora does not handle it,
/// and the reload service only subscribes once the services start. Call this
/// first thing: tokio's handler, once installed, stays for the life of the
/// process (also after the runtime that installed it is gone), so a SIGHUP
/// sent while switchyard starts is ignored instead of fatal.
pub fn survive_early_hangup() {
    match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime.block_on(async {
            if let Err(e) = signal(SignalKind::hangup()) {
                log::warn!("cannot handle SIGHUP: {e}");
            }
        }),
        Err(e) => log::warn!("cannot handle SIGHUP yet: {e}"),
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::channel::<()>(16);
        // Kept alive for as long as this service runs.
        let mut watch = match ConfigWatch::start(self.controller.config_path(), tx) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch the config file ({e}); reload with SIGHUP or `ctl reload`"
                );
                None
            }
        };
        if watch.is_some() {
            // The file was read before the watch began; an edit in between
            // would go unseen until the next one.
            let controller = Arc::clone(&self.controller);
            let _ = tokio::task::spawn_blocking(move || {
                controller.reload_if_changed(ChangeOrigin::File, Now::read())
            })
            .await;
        }
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
                    settle(&mut rx).await;
                    ChangeOrigin::File
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    ChangeOrigin::Signal
                }
            };
            let controller = Arc::clone(&self.controller);
            // The result is logged by the controller; nothing to answer here.
            let _ =
                tokio::task::spawn_blocking(move || controller.reload(origin, Now::read())).await;
            if let Some(watch) = watch.as_mut() {
                if let Err(e) = watch.refresh() {
                    log::warn!("cannot watch the config file any more ({e})");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_that_concern_the_config_file() {
        let targets = Targets::of(Path::new("/etc/switchyard/switchyard.toml"));
        assert_eq!(targets.dirs, vec![PathBuf::from("/etc/switchyard")]);
        for (path, want) in [
            ("/etc/switchyard/switchyard.toml", true),
            ("/etc/switchyard/..data", true),
            ("/etc/switchyard/..data_tmp", true),
            ("/etc/switchyard/.switchyard.toml.swp", false),
            ("/etc/switchyard/other.toml", false),
        ] {
            assert_eq!(targets.concerns(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn a_symlinked_config_also_watches_its_target() {
        let root = std::env::temp_dir().join(format!("sy-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("opt")).unwrap();
        std::fs::write(root.join("opt/real.toml"), "").unwrap();
        let link = root.join("etc/switchyard.toml");
        std::os::unix::fs::symlink(root.join("opt/real.toml"), &link).unwrap();
        let targets = Targets::of(&link);
        let real_opt = std::fs::canonicalize(root.join("opt")).unwrap();
        assert_eq!(targets.dirs, vec![root.join("etc"), real_opt.clone()]);
        assert!(targets.concerns(&real_opt.join("real.toml")));
        let _ = std::fs::remove_dir_all(&root);
    }
}
