//! The admin Unix socket: created mode 0600 (only the owner — and root —
//! may change traffic), peer uid read from the kernel (SO_PEERCRED) for the
//! audit log, bounded lines, idle timeout, any number of clients.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
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

    /// Binds the socket with mode 0600 and returns it with the identity
    /// (device, inode) of the socket file.
    ///
    /// The socket is bound under a temporary name, restricted to 0600 and
    /// only then renamed into place, so there is no moment at which the
    /// path accepts connections with looser permissions — and the rename
    /// replaces a stale socket from an earlier run (or the one of the
    /// process this one upgrades) atomically. A non-socket file at the path
    /// is never replaced.
    fn bind(&self) -> std::io::Result<(UnixListener, (u64, u64))> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket; not replacing it",
                ));
            }
        }
        // Short: Unix socket paths are limited to 107 bytes.
        let temp = dir.join(format!(".sy{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let listener = UnixListener::bind(&temp)?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temp, &self.path))
            .and_then(|()| std::fs::metadata(&self.path));
        match placed {
            Ok(meta) => Ok((listener, (meta.dev(), meta.ino()))),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Removes the socket file at shutdown — unless it is no longer ours:
    /// during a graceful upgrade the new process has already put its own
    /// socket at the same path, and removing that would cut `ctl` off.
    fn remove_if_ours(&self, ours: (u64, u64)) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == ours => {
                let _ = std::fs::remove_file(&self.path);
            }
            _ => {}
        }
    }
}

#[async_trait]
impl BackgroundService for AdminSocket {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (listener, identity) = match self.bind() {
            Ok(bound) => bound,
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
        self.remove_if_ours(identity);
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

/// Parses and applies one command line. Applying takes the controller's
/// lock and may fsync or re-read the config file (resolving host names), so
/// it runs on the blocking pool: the admin runtime has a single thread, and
/// a slow change must not stall every other admin client.
async fn execute(
    controller: &Arc<Controller>,
    text: &str,
    origin: ChangeOrigin,
) -> Result<serde_json::Value, String> {
    let command = Command::parse(text)?;
    let controller = Arc::clone(controller);
    tokio::task::spawn_blocking(move || controller.apply(command, origin))
        .await
        .unwrap_or_else(|e| Err(format!("internal error while applying the command: {e}")))
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
                Ok(text) => (
                    answer_line(execute(&controller, &text, origin).await),
                    false,
                ),
            },
        };
        if write.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}
