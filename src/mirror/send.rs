//! One copy to one backend of the mirror pool: the request written whole,
//! the answer's head parsed for its status and framing, its body read and
//! thrown away, the connection kept for the next copy when HTTP/1.1 allows.
//! Every connect, write and read is bounded by the `[server]` timeouts.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ServerConfig;
use crate::dataplane::framing::{parse_length, ChunkedScanner};
use crate::stats::FailureKind;

/// A response head longer than this is a broken answer.
const MAX_HEAD: usize = 64 * 1024;
/// Idle connections one worker keeps (one per backend, a few backends).
const IDLE_PER_WORKER: usize = 4;
const MAX_HEADERS: usize = 128;

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A final answer with this status, read to its end.
    Answered(u16),
    Failed(FailureKind),
}

/// One worker's idle upstream connections, by backend address.
#[derive(Default)]
pub struct Conns {
    idle: Vec<(SocketAddr, TcpStream)>,
}

impl Conns {
    fn take(&mut self, addr: SocketAddr) -> Option<TcpStream> {
        let at = self.idle.iter().position(|(a, _)| *a == addr)?;
        Some(self.idle.swap_remove(at).1)
    }

    fn put(&mut self, addr: SocketAddr, stream: TcpStream) {
        if self.idle.len() >= IDLE_PER_WORKER {
            self.idle.remove(0);
        }
        self.idle.push((addr, stream));
    }
}

/// Sends `copy` (a whole HTTP/1.1 request) to `addr` and reads the answer
/// to its end. A reused connection that fails before any answer byte (the
/// origin closed it while idle) is replaced by a new one, once.
pub async fn send(
    conns: &mut Conns,
    addr: SocketAddr,
    copy: &[u8],
    server: &ServerConfig,
    buf: &mut Vec<u8>,
) -> Sent {
    let head_method = copy.starts_with(b"HEAD ");
    if let Some(stream) = conns.take(addr) {
        match exchange(stream, copy, head_method, server, buf).await {
            Ok((status, Some(stream))) => {
                conns.put(addr, stream);
                return Sent::Answered(status);
            }
            Ok((status, None)) => return Sent::Answered(status),
            Err(Failure {
                answered: true,
                kind,
            }) => return Sent::Failed(kind),
            Err(Failure {
                answered: false, ..
            }) => {}
        }
    }
    let stream = match connect(addr, server.connect_timeout).await {
        Ok(stream) => stream,
        Err(kind) => return Sent::Failed(kind),
    };
    match exchange(stream, copy, head_method, server, buf).await {
        Ok((status, Some(stream))) => {
            conns.put(addr, stream);
            Sent::Answered(status)
        }
        Ok((status, None)) => Sent::Answered(status),
        Err(failure) => Sent::Failed(failure.kind),
    }
}

async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, FailureKind> {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => Err(FailureKind::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(FailureKind::ConnectRefused)
        }
        Ok(Err(_)) => Err(FailureKind::Other),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

struct Failure {
    kind: FailureKind,
    /// Some of the answer arrived (so the copy must not be sent again).
    answered: bool,
}

fn failed(kind: FailureKind, answered: bool) -> Failure {
    Failure { kind, answered }
}

/// How the answer's body is delimited (RFC 9112 §6.3).
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes the copy, reads the final answer and its body. The status, and
/// the connection when it can carry another request.
async fn exchange(
    mut stream: TcpStream,
    copy: &[u8],
    head_method: bool,
    server: &ServerConfig,
    buf: &mut Vec<u8>,
) -> Result<(u16, Option<TcpStream>), Failure> {
    match tokio::time::timeout(server.write_timeout, stream.write_all(copy)).await {
        Err(_) => return Err(failed(FailureKind::WriteTimeout, false)),
        Ok(Err(_)) => return Err(failed(FailureKind::Reset, false)),
        Ok(Ok(())) => {}
    }
    buf.clear();
    let read_timeout = server.read_timeout;
    loop {
        let (head_len, status, framing, close) = loop {
            if let Some(parsed) = parse_head(buf, head_method)? {
                break parsed;
            }
            if buf.len() >= MAX_HEAD {
                return Err(failed(FailureKind::Other, true));
            }
            let answered = !buf.is_empty();
            if read_more(&mut stream, buf, read_timeout, answered).await? == 0 {
                return Err(failed(FailureKind::Reset, answered));
            }
        };
        buf.drain(..head_len);
        if (100..200).contains(&status) {
            // An interim answer (100 Continue): the final one follows.
            continue;
        }
        let reusable = match framing {
            Framing::Empty => true,
            Framing::Length(mut left) => {
                let have = (buf.len() as u64).min(left);
                left -= have;
                let extra = buf.len() as u64 > have;
                buf.clear();
                while left > 0 {
                    let read = read_more(&mut stream, buf, read_timeout, true).await?;
                    if read == 0 {
                        return Err(failed(FailureKind::Reset, true));
                    }
                    left = left.saturating_sub(buf.len() as u64);
                    buf.clear();
                }
                !extra
            }
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                loop {
                    match scanner.feed(buf) {
                        Ok(Some(end)) => break end == buf.len(),
                        Ok(None) => {}
                        Err(_) => return Err(failed(FailureKind::Other, true)),
                    }
                    buf.clear();
                    if read_more(&mut stream, buf, read_timeout, true).await? == 0 {
                        return Err(failed(FailureKind::Reset, true));
                    }
                }
            }
            Framing::UntilClose => {
                for _ in 0..u32::MAX {
                    buf.clear();
                    if read_more(&mut stream, buf, read_timeout, true).await? == 0 {
                        break;
                    }
                }
                false
            }
        };
        let keep = (reusable && !close).then_some(stream);
        return Ok((status, keep));
    }
}

/// Reads what is there onto the end of `buf`, within `limit`.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: Duration,
    answered: bool,
) -> Result<usize, Failure> {
    // Into the spare capacity: `read_buf` does not zero it first (a
    // zeroed 16 KiB per read was most of a copy's instructions).
    buf.reserve(16 * 1024);
    let read = tokio::time::timeout(limit, stream.read_buf(buf)).await;
    match read {
        Err(_) => Err(failed(FailureKind::ReadTimeout, answered)),
        Ok(Err(_)) => Err(failed(FailureKind::Reset, answered)),
        Ok(Ok(n)) => Ok(n),
    }
}

/// The answer's head if it is all in `buf`: its length, status, framing and
/// whether the origin closes after it.
fn parse_head(
    buf: &[u8],
    head_method: bool,
) -> Result<Option<(usize, u16, Framing, bool)>, Failure> {
    let mut storage = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(failed(FailureKind::Other, !buf.is_empty())),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(failed(FailureKind::Other, true));
    };
    let mut close = version == 0;
    let mut length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = parse_length(header.value);
            if length.is_none() {
                return Err(failed(FailureKind::Other, true));
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = header
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            close |= !chunked;
        } else if header.name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let framing = if (100..200).contains(&status) || head_method || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if close && length.is_none() {
        Framing::UntilClose
    } else {
        match length {
            Some(len) => Framing::Length(len),
            None => Framing::UntilClose,
        }
    };
    Ok(Some((head_len, status, framing, close)))
}
