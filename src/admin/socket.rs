//! The admin Unix socket: created mode 0600 (only the owner — and root —
//! may change traffic), peer uid read from the kernel (SO_PEERCRED) for the
//! audit log, bounded lines, idle timeout, any number of clients.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::protocol::{answer_line, IDLE_TIMEOUT, MAX_LINE};
use crate::control::{ChangeOrigin, Command, Controller};

pub struct AdminSocket {
    controller: Arc<Controller>,
    path: PathBuf,
}

impl AdminSocket {
    pub fn new(controller: Arc<Controller>, path: PathBuf) -> Self {
        AdminSocket { controller, path }
    }

    /// Binds the socket with mode 0600. A stale socket file from a previous
    /// run is removed first; anything else at that path is left alone.
    fn bind(&self) -> std::io::Result<UnixListener> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(&self.path)?;
            }
        }
        let listener = UnixListener::bind(&self.path)?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }
}

#[async_trait]
impl BackgroundService for AdminSocket {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let listener = match self.bind() {
            Ok(l) => l,
            Err(e) => {
                log::error!(
                    "admin socket {}: {e}; ctl will not work",
                    self.path.display()
                );
                return;
            }
        };
        log::info!("admin socket listening on {}", self.path.display());
        let mut clients = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    clients.spawn(serve(stream, Arc::clone(&self.controller)));
                }
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one line of at most MAX_LINE bytes. `Ok(None)` at end of stream;
/// `Err` with the answer to send when the line is too long.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<Vec<u8>, String>>> {
    let mut line = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(Some(Ok(line)));
    }
    if line.len() > MAX_LINE {
        return Ok(Some(Err(format!(
            "command line longer than {MAX_LINE} bytes"
        ))));
    }
    // Last line without newline before the client closed its side.
    Ok(Some(Ok(line)))
}

async fn serve(stream: UnixStream, controller: Arc<Controller>) {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let origin = ChangeOrigin::Admin { uid };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader)).await {
            Err(_) | Ok(Err(_)) | Ok(Ok(None)) => return,
            Ok(Ok(Some(line))) => line,
        };
        let (answer, close) = match line {
            Err(too_long) => (answer_line(Err(too_long)), true),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(_) => (answer_line(Err("command is not valid UTF-8".into())), false),
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => {
                    // Applying is short (a table build and two fsyncs) and runs
                    // on the admin service's own runtime, never a proxy worker.
                    let result = Command::parse(&text).and_then(|c| controller.apply(c, origin));
                    (answer_line(result), false)
                }
            },
        };
        if write.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}
