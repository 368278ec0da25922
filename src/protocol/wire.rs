//! Line framing of the admin socket, shared by the server and `switchyard
//! ctl`: one UTF-8 command per line (at most 4 KiB), one JSON answer per
//! line, `{"ok":true,…}` or `{"ok":false,"kind":"…","error":"…"}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// Longest accepted command line, newline excluded.
pub const MAX_LINE: usize = 4096;

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One answer as its line on the wire (newline included).
pub fn answer_line<T: Serialize>(answer: &T) -> String {
    // Our answer types are plain data (string keys, finite numbers): they
    // always serialize; the fallback only keeps a bug from killing a client.
    let mut line = serde_json::to_string(answer).unwrap_or_else(|e| {
        serde_json::json!({ "ok": false, "kind": "internal", "error": e.to_string() }).to_string()
    });
    line.push('\n');
    line
}

/// Why `ctl` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect (exit code 2).
    #[error("{0}")]
    Unreachable(String),
    /// Connected, but the exchange failed.
    #[error("{0}")]
    Protocol(String),
    /// Not sent: the command cannot be put on the wire (exit code 1).
    #[error("{0}")]
    Refused(String),
}

/// The command as it goes on the wire, or why it cannot: one command per
/// line, since an embedded line break would smuggle a second command past
/// the one answer a client reads.
pub fn one_line(command: &str) -> Result<&str, ClientError> {
    let command = command.trim_end_matches(['\n', '\r']);
    if command.contains(['\n', '\r']) {
        return Err(ClientError::Refused(
            "a command must be a single line".into(),
        ));
    }
    if command.len() > MAX_LINE {
        return Err(ClientError::Refused(format!(
            "the command is longer than {MAX_LINE} bytes"
        )));
    }
    Ok(command)
}

/// Sends one command and returns the answer as it came (the caller picks
/// the typed answer it expects, or prints it raw).
pub fn request(socket: &Path, command: &str) -> Result<Value, ClientError> {
    let command = one_line(command)?;
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        ClientError::Unreachable(format!(
            "cannot reach the admin socket {}: {e}",
            socket.display()
        ))
    })?;
    let timeout = Some(Duration::from_secs(30));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let protocol = |e: std::io::Error| ClientError::Protocol(format!("admin socket: {e}"));
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(protocol)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(protocol)?;
    if line.is_empty() {
        return Err(ClientError::Protocol(
            "the server closed the connection without an answer".into(),
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| ClientError::Protocol(format!("unreadable answer ({e}): {}", line.trim_end())))
}
