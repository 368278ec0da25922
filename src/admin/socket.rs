//! The admin Unix socket: created mode 0600 (only the owner — and root —
//! may change traffic), peer uid read from the kernel (SO_PEERCRED) for the
//! audit log, bounded lines, idle timeout, any number of clients. The edge
//! where a command's time is read: each is applied at the `Now` it arrived.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::clock::Now;
use crate::control::{ChangeOrigin, Controller, Refusal};
use crate::protocol::answer::Answer;
use crate::protocol::wire::{answer_line, IDLE_TIMEOUT, MAX_LINE};
use crate::protocol::Command;

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
                    clients.spawn(serve(stream, Arc::clone(&self.controller), IDLE_TIMEOUT));
                }
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
        self.remove_if_ours(identity);
    }
}

/// Reads one line of at most MAX_LINE bytes. `Ok(None)` at end of stream;
/// `Err` with the refusal to send when the line is too long.
async fn read_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<Vec<u8>, Refusal>>> {
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
        return Ok(Some(Err(Refusal::BadRequest(format!(
            "command line longer than {MAX_LINE} bytes"
        )))));
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
) -> Result<Answer, Refusal> {
    let command = Command::parse(text)?;
    let controller = Arc::clone(controller);
    let now = Now::read();
    tokio::task::spawn_blocking(move || controller.apply(command, origin, now))
        .await
        .unwrap_or_else(|e| {
            Err(Refusal::Internal(format!(
                "internal error while applying the command: {e}"
            )))
        })
}

/// The answer line for a command's result.
fn reply(result: Result<Answer, Refusal>) -> String {
    match result {
        Ok(answer) => answer_line(&answer),
        Err(refusal) => answer_line(&refusal.answer()),
    }
}

/// One client: lines in, answers out, until it closes, sends an oversized
/// line, or stays silent for `idle`.
async fn serve(stream: UnixStream, controller: Arc<Controller>, idle: Duration) {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let origin = ChangeOrigin::Admin { uid };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(idle, read_line(&mut reader)).await {
            Err(_) | Ok(Err(_)) | Ok(Ok(None)) => return,
            Ok(Ok(Some(line))) => line,
        };
        let (answer, close) = match line {
            Err(too_long) => (reply(Err(too_long)), true),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(_) => {
                    let refusal = Refusal::BadRequest("command is not valid UTF-8".into());
                    (reply(Err(refusal)), false)
                }
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => (reply(execute(&controller, &text, origin).await), false),
            },
        };
        if write.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn controller(tag: &str) -> (Arc<Controller>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("sy-sock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("switchyard.toml");
        std::fs::write(
            &path,
            format!(
                "[admin]\nstate_dir = \"{}/state\"\n[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[split]\nblue = 100\n",
                dir.display()
            ),
        )
        .unwrap();
        let config = crate::config::load(&path).unwrap();
        (Controller::start(&path, config).unwrap().0, dir)
    }

    async fn read_answer(client: &mut UnixStream) -> String {
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while client.read(&mut byte).await.unwrap() == 1 && byte[0] != b'\n' {
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn answers_lines_and_closes_an_idle_connection() {
        let (controller, dir) = controller("idle");
        let (server, mut client) = UnixStream::pair().unwrap();
        let served = tokio::spawn(serve(server, controller, Duration::from_millis(300)));

        client.write_all(b"status\r\n\n  \nfrob\n").await.unwrap();
        let status: serde_json::Value =
            serde_json::from_str(&read_answer(&mut client).await).unwrap();
        assert_eq!(status["ok"], true);
        assert_eq!(status["revision"], 1);
        let unknown = read_answer(&mut client).await;
        assert!(unknown.contains("unknown command"), "{unknown}");
        assert!(unknown.contains("\"kind\":\"bad_request\""), "{unknown}");

        // Then silence: the server hangs up by itself, within a bound.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0))), "closed after the idle timeout");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_oversized_line_gets_an_error_and_the_connection_closes() {
        let (controller, dir) = controller("long");
        let (server, mut client) = UnixStream::pair().unwrap();
        let served = tokio::spawn(serve(server, controller, Duration::from_secs(60)));
        let long = vec![b's'; MAX_LINE + 10];
        // The server answers and hangs up without waiting for the end of it.
        let _ = client.write_all(&long).await;
        let answer = read_answer(&mut client).await;
        assert!(answer.contains("longer than 4096"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_socket_is_0600_and_a_stale_one_is_replaced_but_not_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let (controller, dir) = controller("bind");
        let path = dir.join("run/admin.sock");
        let socket = AdminSocket::new(controller, path.clone());
        let (first, _) = socket.bind().unwrap();
        drop(first); // a stale socket file stays behind
        let (_listener, ours) = socket.bind().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(UnixStream::connect(&path).await.is_ok());
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("run")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp socket left behind");

        // A successor took the path over: shutdown leaves its socket alone.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        socket.remove_if_ours(ours);
        assert!(path.exists());
        let refused = socket.bind().unwrap_err();
        assert!(refused.to_string().contains("not a socket"), "{refused}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
