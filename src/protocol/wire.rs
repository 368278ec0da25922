//! The admin socket protocol, shared by the server and `switchyard ctl`:
//! one UTF-8 command per line (at most 4 KiB), one JSON answer per line,
//! `{"ok":true,…}` or `{"ok":false,"error":"…"}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Longest accepted command line, newline excluded.
pub const MAX_LINE: usize = 4096;

/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The answer line for a command's result (newline included).
pub fn answer_line(result: Result<Value, String>) -> String {
    let mut value = match result {
        Ok(value) => value,
        Err(error) => json!({ "ok": false, "error": error }),
    };
    if value.get("ok").is_none() {
        value["ok"] = json!(true);
    }
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// Why `ctl` could not get an answer.
#[derive(Debug)]
pub enum ClientError {
    /// Could not connect (exit code 2).
    Unreachable(String),
    /// Connected, but the exchange failed.
    Protocol(String),
    /// Not sent: the command cannot be put on the wire (exit code 1).
    Refused(String),
}

/// Sends one command and returns the parsed answer.
pub fn request(socket: &Path, command: &str) -> Result<Value, ClientError> {
    // One command per line: an embedded line break would smuggle a second
    // command past the one answer this client reads.
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
