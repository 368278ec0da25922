//! A batch of copies to one backend of the mirror pool, pipelined on one
//! connection: every copy written in one write, then their answers read
//! in order ([`super::answers`] finds where each ends), bodies skipped and
//! thrown away; the connection kept for the next batch when HTTP/1.1
//! allows. One write and a read or two carry a whole batch, instead of a
//! write and a read per copy.
//!
//! An answer is only ever matched with its own copy: answers come in the
//! order of the requests (RFC 9112 §9.3.2). When the connection ends
//! cleanly between two answers (the origin said `Connection: close`, or
//! closed an idle connection), the copies it did not answer were not taken
//! and go again on a fresh connection; when it breaks inside an answer,
//! times out or sends what can't be parsed, the copies without an answer
//! count as failed and the connection is discarded. Every connect, write
//! and read is bounded by the `[server]` timeouts.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::answers::{parse_head, Framing, Parsed};
use super::queue::Batch;
pub use super::route::Outcome;
use crate::config::ServerConfig;
use crate::dataplane::framing::ChunkedScanner;
use crate::stats::{FailureKind, Instant};

/// A response head longer than this is a broken answer.
const MAX_HEAD: usize = 64 * 1024;
/// Idle connections one worker keeps (one per backend, a few backends).
const IDLE_PER_WORKER: usize = 4;
/// Reads for one answer's body, at most (each waits at most the read
/// timeout; a body read in 16 KiB pieces: 1 GiB).
const MAX_READS: u32 = 1 << 16;

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

/// How one connection's part of a batch ended.
enum RoundEnd {
    /// Every copy from the round's first on was answered; the connection,
    /// when it can carry more.
    Done(Option<TcpStream>),
    /// The connection ended between answers (or before the first): the
    /// copies after those answered were not taken by the origin.
    Closed,
    /// Broken inside an answer, timed out, or unparsable: the copies
    /// without an answer fail with this kind.
    Failed(FailureKind),
}

/// Sends copies `copies` of `batch` to `addr` and reads their answers:
/// one [`Outcome`] per copy, in order, pushed onto `out`.
pub async fn send_batch(
    conns: &mut Conns,
    addr: SocketAddr,
    (batch, copies): (&Batch, Range<usize>),
    server: &ServerConfig,
    buf: &mut Vec<u8>,
    out: &mut Vec<Outcome>,
) {
    let base = out.len();
    let len = copies.len();
    // Each round answers at least one copy or was on a reused (possibly
    // stale) connection, so this bound is never what ends the loop.
    for _ in 0..len + IDLE_PER_WORKER + 2 {
        let done = out.len() - base;
        if done >= len {
            return;
        }
        let (stream, reused) = match conns.take(addr) {
            Some(stream) => (stream, true),
            None => match connect(addr, server.connect_timeout).await {
                Ok(stream) => (stream, false),
                Err(kind) => return fail_rest(out, base, len, kind),
            },
        };
        let rest = copies.start + done..copies.end;
        match round(stream, batch, rest, server, buf, out).await {
            RoundEnd::Done(keep) => {
                if let Some(stream) = keep {
                    conns.put(addr, stream);
                }
                return;
            }
            // Nothing answered on a fresh connection: the origin does not
            // take these copies.
            RoundEnd::Closed if !reused && out.len() - base == done => {
                return fail_rest(out, base, len, FailureKind::Reset)
            }
            RoundEnd::Closed => {}
            RoundEnd::Failed(kind) => return fail_rest(out, base, len, kind),
        }
    }
    fail_rest(out, base, len, FailureKind::Reset);
}

/// Every copy of the batch without an outcome yet fails with `kind`.
fn fail_rest(out: &mut Vec<Outcome>, base: usize, len: usize, kind: FailureKind) {
    let missing = (base + len).saturating_sub(out.len());
    out.extend(std::iter::repeat_n(Outcome::Failed(kind), missing));
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

/// Writes copies `from..to` of `batch` in one write and reads their
/// answers in order, pushing an outcome per answered copy.
async fn round(
    mut stream: TcpStream,
    batch: &Batch,
    Range {
        start: from,
        end: to,
    }: Range<usize>,
    server: &ServerConfig,
    buf: &mut Vec<u8>,
    out: &mut Vec<Outcome>,
) -> RoundEnd {
    let bytes = batch
        .bytes
        .get(batch.start(from)..batch.start(to))
        .unwrap_or_default();
    match tokio::time::timeout(server.write_timeout, stream.write_all(bytes)).await {
        Err(_) => return RoundEnd::Failed(FailureKind::WriteTimeout),
        // A reused connection the origin had closed, most likely.
        Ok(Err(_)) => return RoundEnd::Closed,
        Ok(Ok(())) => {}
    }
    let limit = server.read_timeout;
    buf.clear();
    // `buf[pos..]` is what is read and not yet parsed.
    let mut pos = 0;
    // When the last read ended: the end of the answers it completed.
    let mut read_at = Instant::now();
    let mut i = from;
    while i < to {
        let head_method = batch.copy(i).starts_with(b"HEAD ");
        let mut reads = 0u32;
        let head = loop {
            match parse_head(&buf[pos..], head_method) {
                Parsed::Head(head) => break head,
                Parsed::Bad => return RoundEnd::Failed(FailureKind::Other),
                Parsed::Partial => {}
            }
            let partial = buf.len() > pos;
            if buf.len() - pos >= MAX_HEAD || reads >= MAX_READS {
                return RoundEnd::Failed(FailureKind::Other);
            }
            reads += 1;
            if pos > 0 {
                buf.drain(..pos);
                pos = 0;
            }
            match read_more(&mut stream, buf, limit).await {
                Ok(0) | Err(FailureKind::Reset) if !partial => return RoundEnd::Closed,
                Ok(0) => return RoundEnd::Failed(FailureKind::Reset),
                Err(kind) => return RoundEnd::Failed(kind),
                Ok(_) => read_at = Instant::now(),
            }
        };
        pos += head.len;
        if (100..200).contains(&head.status) {
            // An interim answer (100 Continue): the final one follows.
            continue;
        }
        match head.framing {
            Framing::Empty => {}
            Framing::Length(length) => {
                let mut left = length;
                let have = (buf.len() - pos) as u64;
                if have >= left {
                    pos += left as usize;
                } else {
                    left -= have;
                    buf.clear();
                    pos = 0;
                    for _ in 0..MAX_READS {
                        match read_more(&mut stream, buf, limit).await {
                            Ok(0) => return RoundEnd::Failed(FailureKind::Reset),
                            Err(kind) => return RoundEnd::Failed(kind),
                            Ok(_) => read_at = Instant::now(),
                        }
                        let have = buf.len() as u64;
                        if have >= left {
                            pos = left as usize;
                            left = 0;
                            break;
                        }
                        left -= have;
                        buf.clear();
                    }
                    if left > 0 {
                        return RoundEnd::Failed(FailureKind::Other);
                    }
                }
            }
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                let mut ended = false;
                for _ in 0..MAX_READS {
                    match scanner.feed(&buf[pos..]) {
                        Ok(Some(end)) => {
                            pos += end;
                            ended = true;
                            break;
                        }
                        Ok(None) => {}
                        Err(_) => return RoundEnd::Failed(FailureKind::Other),
                    }
                    buf.clear();
                    pos = 0;
                    match read_more(&mut stream, buf, limit).await {
                        Ok(0) => return RoundEnd::Failed(FailureKind::Reset),
                        Err(kind) => return RoundEnd::Failed(kind),
                        Ok(_) => read_at = Instant::now(),
                    }
                }
                if !ended {
                    return RoundEnd::Failed(FailureKind::Other);
                }
            }
            Framing::UntilClose => {
                let mut closed = false;
                for _ in 0..MAX_READS {
                    buf.clear();
                    match read_more(&mut stream, buf, limit).await {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Err(kind) => return RoundEnd::Failed(kind),
                        Ok(_) => {}
                    }
                }
                if !closed {
                    return RoundEnd::Failed(FailureKind::Other);
                }
                out.push(Outcome::Answered {
                    status: head.status,
                    at: Instant::now(),
                });
                return if i + 1 < to {
                    RoundEnd::Closed
                } else {
                    RoundEnd::Done(None)
                };
            }
        }
        out.push(Outcome::Answered {
            status: head.status,
            at: read_at,
        });
        i += 1;
        if head.close {
            return if i < to {
                RoundEnd::Closed
            } else {
                RoundEnd::Done(None)
            };
        }
    }
    // Bytes past the last answer: nothing asked for them, the connection
    // can't be trusted with another batch.
    let clean = pos == buf.len();
    RoundEnd::Done(clean.then_some(stream))
}

/// Reads what is there onto the end of `buf`, within `limit`.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<usize, FailureKind> {
    // Into the spare capacity: `read_buf` does not zero it first (a
    // zeroed 16 KiB per read was most of a copy's instructions once).
    buf.reserve(16 * 1024);
    match tokio::time::timeout(limit, stream.read_buf(buf)).await {
        Err(_) => Err(FailureKind::ReadTimeout),
        Ok(Err(_)) => Err(FailureKind::Reset),
        Ok(Ok(n)) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn server() -> ServerConfig {
        let text = "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[split]\nblue = 100\n";
        crate::config::parse(text, std::path::Path::new("/"))
            .expect("config")
            .server
    }

    fn batch(n: usize) -> Batch {
        let mut batch = Batch::default();
        for i in 0..n {
            batch.push(format!("GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes());
        }
        batch
    }

    /// An origin on loopback that, for each connection in turn, reads
    /// `requests` bodiless requests, writes `answer` in one piece, and then
    /// closes (everything read first: a FIN, not a reset) or keeps the
    /// connection open until the test ends. What each connection received.
    async fn scripted(
        script: Vec<(usize, &'static [u8], bool)>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut received, mut open) = (Vec::new(), Vec::new());
            for (requests, answer, close) in script {
                let Ok(Ok((mut stream, _))) =
                    tokio::time::timeout(Duration::from_secs(5), listener.accept()).await
                else {
                    break;
                };
                let mut got = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < requests {
                    let mut chunk = [0u8; 4096];
                    match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                let _ = stream.write_all(answer).await;
                received.push(got);
                if !close {
                    open.push(stream);
                }
            }
            received
        });
        (addr, task)
    }

    /// The service's side of one origin, as each test drives it: the
    /// connections, the read buffer and the outcomes of every batch sent.
    struct Sender {
        addr: SocketAddr,
        server: ServerConfig,
        conns: Conns,
        buf: Vec<u8>,
        out: Vec<Outcome>,
    }

    impl Sender {
        fn new(addr: SocketAddr) -> Sender {
            let (conns, buf, out) = (Conns::default(), Vec::new(), Vec::new());
            let server = server();
            Sender {
                addr,
                server,
                conns,
                buf,
                out,
            }
        }

        /// Sends copies `range` of `batch`; their outcomes join `self.out`.
        async fn send(&mut self, batch: &Batch, range: Range<usize>) {
            let (conns, buf, out) = (&mut self.conns, &mut self.buf, &mut self.out);
            send_batch(conns, self.addr, (batch, range), &self.server, buf, out).await;
        }
    }

    fn statuses(out: &[Outcome]) -> Vec<Result<u16, FailureKind>> {
        out.iter()
            .map(|o| match o {
                Outcome::Answered { status, .. } => Ok(*status),
                Outcome::Failed(kind) => Err(*kind),
                Outcome::NoBackend => Err(FailureKind::Other),
            })
            .collect()
    }

    #[tokio::test]
    async fn pipelined_answers_are_matched_in_order_whatever_their_framing() {
        let answers: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\ngreen\
            HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ngreen\r\n0\r\n\r\n\
            HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let (addr, origin) = scripted(vec![(4, answers, false)]).await;
        let mut sender = Sender::new(addr);
        sender.send(&batch(4), 0..4).await;
        assert_eq!(statuses(&sender.out), [Ok(200), Ok(503), Ok(204), Ok(404)]);
        // One write carried all four; the connection is kept.
        assert_eq!(sender.conns.idle.len(), 1);
        let received = origin.await.expect("origin");
        assert_eq!(received.len(), 1);
        assert_eq!(received[0], batch(4).bytes);
    }

    #[tokio::test]
    async fn a_piece_of_a_batch_sends_its_own_copies_only() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 201 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, origin) = scripted(vec![(2, ok, false)]).await;
        let mut sender = Sender::new(addr);
        let whole = batch(4);
        sender.send(&whole, 1..3).await;
        assert_eq!(statuses(&sender.out), [Ok(200), Ok(201)]);
        let received = origin.await.expect("origin");
        assert_eq!(
            received,
            [whole.bytes[whole.start(1)..whole.start(3)].to_vec()]
        );
    }

    #[tokio::test]
    async fn a_connection_broken_mid_batch_fails_the_unanswered_copies_only() {
        let answers: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\ngreen\
            HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        let (addr, origin) = scripted(vec![(4, answers, true)]).await;
        let mut sender = Sender::new(addr);
        sender.send(&batch(4), 0..4).await;
        let reset = Err(FailureKind::Reset);
        assert_eq!(statuses(&sender.out), [Ok(200), reset, reset, reset]);
        assert!(
            sender.conns.idle.is_empty(),
            "a broken connection is not kept"
        );
        assert_eq!(origin.await.expect("origin").len(), 1);
    }

    #[tokio::test]
    async fn copies_after_an_announced_close_go_again_on_a_fresh_connection() {
        let (addr, origin) = scripted(vec![
            (
                3,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (
                2,
                b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n\
                  HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
        ])
        .await;
        let mut sender = Sender::new(addr);
        sender.send(&batch(3), 0..3).await;
        assert_eq!(statuses(&sender.out), [Ok(200), Ok(201), Ok(202)]);
        let received = origin.await.expect("origin");
        let whole = batch(3);
        assert_eq!(
            received,
            [whole.bytes.clone(), whole.bytes[whole.start(1)..].to_vec()]
        );
    }

    #[tokio::test]
    async fn a_stale_idle_connection_is_replaced_once_and_a_silent_origin_fails() {
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, origin) = scripted(vec![
            (1, ok, true),
            (2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (1, b"", true),
        ])
        .await;
        let mut sender = Sender::new(addr);
        sender.send(&batch(1), 0..1).await;
        assert_eq!(statuses(&sender.out), [Ok(200)]);
        assert_eq!(sender.conns.idle.len(), 1);
        // The origin closes that connection after its answer (before or
        // after this write: an end or a reset, never an answer): the next
        // batch goes on a new one, answered in full.
        sender.out.clear();
        sender.send(&batch(2), 0..2).await;
        assert_eq!(statuses(&sender.out), [Ok(200), Ok(200)]);
        // A fresh connection closed without a byte of answer: failed.
        sender.conns.idle.clear();
        sender.out.clear();
        sender.send(&batch(1), 0..1).await;
        assert_eq!(statuses(&sender.out), [Err(FailureKind::Reset)]);
        assert_eq!(origin.await.expect("origin").len(), 3);
    }
}
