//! The access log's writer thread: drains every request thread's ring
//! into the file, reopens the file on request (logrotate's default mode:
//! it renames the file, then signals), and flushes at exit.
//!
//! It polls instead of being woken, so the request path never makes a
//! syscall: every [`BUSY_POLL`] while lines keep coming, every
//! [`IDLE_POLL`] when they don't — a line reaches the file within tens
//! of milliseconds, and a thread's ring (about 3 000 lines) holds what
//! even a busy worker finishes between two drains.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Sink, SINK};
use crate::config::AccessLogPath;

const BUSY_POLL: Duration = Duration::from_millis(5);
const IDLE_POLL: Duration = Duration::from_millis(20);
/// At most one warning about a failing file per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("access_log.path: cannot open \"{}\": {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the access log writer thread did not start: {0}")]
    Thread(std::io::Error),
    #[error("the access log is already started in this process")]
    AlreadyStarted,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot reopen the access log \"{}\": {source}", .path.display())]
pub struct ReopenError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

enum Target {
    File { path: PathBuf, file: File },
    Stderr,
}

/// Where lines go, owned by whoever drains (the writer thread, a reopen,
/// the flush at exit) under the sink's `output` lock.
pub(super) struct Output {
    target: Target,
    /// Lines drained and not written yet (reused: it keeps its capacity).
    buf: Vec<u8>,
    last_warning: Option<Instant>,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Output {
    pub(super) fn open(path: &AccessLogPath) -> Result<Output, StartError> {
        let target = match path {
            AccessLogPath::Stderr => Target::Stderr,
            AccessLogPath::File(path) => Target::File {
                file: open_append(path).map_err(|source| StartError::Open {
                    path: path.clone(),
                    source,
                })?,
                path: path.clone(),
            },
        };
        Ok(Output {
            target,
            buf: Vec::with_capacity(256 * 1024),
            last_warning: None,
        })
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        let result = match &mut self.target {
            Target::File { file, .. } => file.write_all(&self.buf),
            Target::Stderr => std::io::stderr().lock().write_all(&self.buf),
        };
        self.buf.clear();
        result
    }
}

/// Moves every queued line to the file. Returns how many lines it took.
fn drain(sink: &Sink, output: &mut Output) -> u64 {
    let mut lines = 0;
    {
        let mut rings = sink.rings.lock();
        for ring in rings.iter() {
            lines += ring.drain_into(&mut output.buf);
        }
        // The ring of a thread that has ended (only the list holds it).
        rings.retain(|ring| Arc::strong_count(ring) > 1 || !ring.is_empty());
    }
    if lines > 0 {
        if let Err(e) = output.write_out() {
            sink.dropped.fetch_add(lines, Ordering::Relaxed);
            let now = Instant::now();
            if output
                .last_warning
                .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
            {
                output.last_warning = Some(now);
                log::warn!("access log: {lines} line(s) lost writing the file: {e}");
            }
        }
    }
    lines
}

pub(super) fn spawn() -> Result<(), StartError> {
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| {
            let Some(sink) = SINK.get() else { return };
            loop {
                let lines = drain(sink, &mut sink.output.lock());
                std::thread::sleep(if lines > 0 { BUSY_POLL } else { IDLE_POLL });
            }
        })
        .map(|_| ())
        .map_err(StartError::Thread)
}

/// Writes every line queued so far, now (at exit: nothing is lost).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        drain(sink, &mut sink.output.lock());
    }
}

/// Reopens the log file by its path (after logrotate renamed it): the
/// lines queued so far go to the old file, the next ones to the new.
/// `Ok(None)` when there is no log file (none configured, or stderr).
pub fn reopen() -> Result<Option<PathBuf>, ReopenError> {
    let Some(sink) = SINK.get() else {
        return Ok(None);
    };
    let mut output = sink.output.lock();
    drain(sink, &mut output);
    let Target::File { path, file } = &mut output.target else {
        return Ok(None);
    };
    *file = open_append(path).map_err(|source| ReopenError {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path.clone()))
}

/// SIGUSR1 reopens the access log. Installed whether or not a log is
/// configured, so that a stray SIGUSR1 (a logrotate rule) never kills the
/// process by the signal's default action.
pub struct ReopenOnSignal;

#[async_trait]
impl BackgroundService for ReopenOnSignal {
    async fn start(&self, shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            log::error!("cannot install the SIGUSR1 handler; use `ctl reopen-logs`");
            return;
        };
        // Keep handling the signal through the drain on shutdown; the
        // runtime's teardown ends this loop.
        let _ = shutdown;
        while usr1.recv().await.is_some() {
            match tokio::task::spawn_blocking(reopen).await {
                Ok(Ok(Some(path))) => log::info!("SIGUSR1: reopened {}", path.display()),
                Ok(Ok(None)) => log::info!("SIGUSR1: no access log file to reopen"),
                Ok(Err(e)) => log::error!("SIGUSR1: {e}"),
                Err(e) => log::error!("SIGUSR1: reopen task failed: {e}"),
            }
        }
    }
}
