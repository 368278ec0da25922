//! Both ends of a case on the wire: the recording origin (every byte it
//! receives, exactly) and the client outcome (what came back, parsed
//! strictly into a list of tokens).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchyard::dataplane::framing::ChunkedScanner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout_at, Instant};

/// How long a case's client waits for the proxy to close the connection.
pub const CASE_DEADLINE: Duration = Duration::from_secs(5);
/// The origin's answer when a case names none.
pub const DEFAULT_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[derive(Default)]
pub struct Recording {
    /// Every byte received, on any connection, since the last take.
    pub received: Mutex<Vec<u8>>,
    /// What the origin answers each complete request with.
    pub response: Mutex<Vec<u8>>,
}

/// A raw origin that records exactly what reaches it and answers every
/// request it can delimit with the current case's response.
pub struct RecordingOrigin {
    pub addr: SocketAddr,
    pub recording: Arc<Recording>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingOrigin {
    pub async fn start() -> RecordingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let recording = Arc::new(Recording::default());
        *recording.response.lock() = DEFAULT_RESPONSE.to_vec();
        let shared = Arc::clone(&recording);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            connections.spawn(serve(stream, Arc::clone(&shared)));
                        }
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        RecordingOrigin {
            addr,
            recording,
            task,
        }
    }

    /// Waits until nothing more arrives for a few polls (bounded at 1 s),
    /// then takes what was received.
    pub async fn take(&self) -> Vec<u8> {
        let mut last = usize::MAX;
        let mut quiet = 0;
        for _ in 0..20 {
            let len = self.recording.received.lock().len();
            quiet = if len == last { quiet + 1 } else { 0 };
            if quiet >= 3 {
                break;
            }
            last = len;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::mem::take(&mut *self.recording.received.lock())
    }
}

async fn serve(mut stream: TcpStream, recording: Arc<Recording>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Bounded by the proxy's bytes and the idle deadline.
    loop {
        let read = match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(read)) => read,
        };
        recording.received.lock().extend_from_slice(&buf[..read]);
        pending.extend_from_slice(&buf[..read]);
        while let Some(len) = request_len(&pending) {
            pending.drain(..len);
            let response = recording.response.lock().clone();
            if stream.write_all(&response).await.is_err() {
                return;
            }
        }
    }
}

/// The length of the complete request at the start of `bytes`, if there
/// is one the origin can delimit.
fn request_len(bytes: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = request.parse(bytes).ok()? else {
        return None;
    };
    let value = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect::<Vec<_>>()
    };
    let chunked = value("transfer-encoding")
        .last()
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        let end = ChunkedScanner::default().feed(&bytes[head..]).ok()??;
        return Some(head + end);
    }
    let length: usize = value("content-length")
        .first()
        .map_or(Some(0), |v| v.trim().parse().ok())?;
    (bytes.len() >= head + length).then_some(head + length)
}

/// Sends `request` on a fresh connection to `addr` and returns the
/// outcome tokens (see the corpus format).
pub async fn outcome(addr: SocketAddr, request: &[u8]) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return "connect-failed".to_string();
    };
    let _ = stream.set_nodelay(true);
    // A proxy may refuse and close before reading everything.
    let _ = stream.write_all(request).await;
    let until = Instant::now() + CASE_DEADLINE;
    let mut got = Vec::new();
    let mut hung = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match timeout_at(until, stream.read(&mut buf)).await {
            Err(_) => {
                hung = true;
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => got.extend_from_slice(&buf[..read]),
        }
    }
    let mut tokens = responses(&got);
    if hung {
        tokens.push("hang".to_string());
    }
    if tokens.is_empty() {
        tokens.push("none".to_string());
    }
    tokens.join(" ")
}

/// The responses in `bytes`, strictly framed, as tokens.
fn responses(mut bytes: &[u8]) -> Vec<String> {
    let mut tokens = Vec::new();
    // Each round consumes a head or ends.
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(bytes) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => {
                tokens.push("cut".to_string());
                return tokens;
            }
            Err(_) => {
                tokens.push("garbled".to_string());
                return tokens;
            }
        };
        let status = response.code.unwrap_or(0);
        tokens.push(status.to_string());
        let field = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let body = &bytes[head..];
        let len = if (100..200).contains(&status) || status == 204 || status == 304 {
            0
        } else if let Some(te) = field("transfer-encoding") {
            if te != "chunked" {
                body.len()
            } else {
                match ChunkedScanner::default().feed(body) {
                    Ok(Some(end)) => end,
                    Ok(None) => {
                        tokens.push("cut".to_string());
                        return tokens;
                    }
                    Err(_) => {
                        tokens.push("garbled".to_string());
                        return tokens;
                    }
                }
            }
        } else if let Some(length) = field("content-length") {
            match length.parse::<usize>() {
                Ok(length) if length <= body.len() => length,
                Ok(_) => {
                    tokens.push("cut".to_string());
                    return tokens;
                }
                Err(_) => {
                    tokens.push("garbled".to_string());
                    return tokens;
                }
            }
        } else {
            body.len()
        };
        bytes = &body[len..];
    }
    tokens
}
