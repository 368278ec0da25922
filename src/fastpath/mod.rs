//! The HTTP/1.1 fast path: plain keep-alive requests proxied without
//! pingora's HTTP layer.
//!
//! Profiles of the pingora path (README, "Performance") put most of its cost
//! per request in building `http` header maps twice, copying them, and the
//! per-request futures and timers around them. This path keeps pingora's
//! listeners, process model, signals and upgrade, but for a plain HTTP/1.1
//! request it parses the head in place (`httparse`), writes the upstream head
//! straight from the client's bytes, and forwards bodies byte for byte over
//! its own per-thread upstream keep-alive connections.
//!
//! It only takes what it fully understands (see [`head::parse_request`]);
//! anything else is handed, bytes unread, to pingora's proxy, which either
//! serves it or answers the error. Routing, statistics, passive health and
//! retries are the same as [`crate::proxy`]'s.

mod chunked;
mod deadline;
mod head;
mod upstream;

use std::cell::RefCell;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{no_backend_body, CONNECT_RETRIES};
use crate::routing::{fast_random, Pool, RoutingTable};
use crate::shared::Shared;
use crate::stats::{FailureKind, Instant, StatusClass, REQUESTS};
use chunked::ChunkedScanner;
use deadline::Deadline;
use head::{ClientAddr, Framing, Parsed, Request, ResponseContext};

/// A request head must fit in this to take the fast path (larger ones go to
/// pingora, which allows more).
const CLIENT_BUFFER: usize = 16 * 1024;
/// Upstream reads: a response head must fit; bodies stream through it.
const UPSTREAM_BUFFER: usize = 16 * 1024;
/// How long a started request may pause before the client is given up on.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection accepted just before shutdown has to send its
/// first request (it is counted in flight meanwhile, so the process waits
/// for it): its client is most likely sending it at that very moment.
const FIRST_REQUEST_AT_SHUTDOWN: Duration = Duration::from_secs(1);
/// Re-sends of an idempotent request whose reused upstream connection turned
/// out closed, on top of the connect retry.
const STALE_RETRIES: u8 = 2;

/// How a client connection left the fast path.
pub enum Ending {
    /// Closed (or idle timeout, or shutdown): nothing more to do.
    Closed,
    /// A request the fast path doesn't carry: its bytes were put back in the
    /// stream, and pingora serves the connection from here on.
    Pingora(Stream),
}

/// The buffers of a connection while it has a request on; between requests
/// they go back to a per-thread spare list, so an idle connection holds none
/// and a busy one allocates none.
struct Scratch {
    client: Box<[u8]>,
    upstream: Box<[u8]>,
    /// Heads being written (and, on a retry, the request to send again).
    out: Vec<u8>,
}

thread_local! {
    static SPARE: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// Spare scratch sets kept per thread (about 34 KiB each).
const SPARE_PER_THREAD: usize = 64;
/// A head buffer that grew past this (a huge header) is not kept.
const OUT_KEEP: usize = 64 * 1024;

impl Scratch {
    fn take() -> Scratch {
        SPARE
            .with(|spare| spare.borrow_mut().pop())
            .unwrap_or_else(|| Scratch {
                client: vec![0; CLIENT_BUFFER].into_boxed_slice(),
                upstream: vec![0; UPSTREAM_BUFFER].into_boxed_slice(),
                out: Vec::with_capacity(4096),
            })
    }

    fn give_back(self) {
        if self.out.capacity() > OUT_KEEP {
            return;
        }
        SPARE.with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_PER_THREAD {
                spare.push(self);
            }
        });
    }
}

/// Is this stream one the fast path can serve (plain TCP, not TLS)?
pub fn takes(stream: &Stream) -> bool {
    stream.as_any().is::<L4Stream>() && stream.get_ssl_digest().is_none()
}

/// The concrete plain stream, if it is one.
pub fn plain(stream: Stream) -> Option<Box<L4Stream>> {
    stream.into_any().downcast::<L4Stream>().ok()
}

/// Serves one client connection until it closes, or until a request needs
/// pingora.
pub async fn serve(client: Box<L4Stream>, shared: &Shared, shutdown: &ShutdownWatch) -> Ending {
    let client_ip = client
        .get_socket_digest()
        .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    let mut connection = Connection {
        client,
        client_addr: ClientAddr::new(client_ip),
        buffered: 0,
        deadline: Deadline::new(),
    };
    // Registered once for the connection's life (not per idle wait).
    let mut watch = shutdown.clone();
    let mut shutdown_begins = std::pin::pin!(watch.changed());
    let mut scratch: Option<Scratch> = None;
    let mut served_one = false;
    loop {
        if connection.buffered == 0 {
            if let Some(spare) = scratch.take() {
                spare.give_back();
            }
            // A new connection gets its first request served even when the
            // server begins shutting down (its client is sending it right
            // now); an idle keep-alive connection is closed then, unless
            // its next request is already here.
            let wait = if !served_one {
                if *shutdown.borrow() {
                    Wait::FirstAtShutdown
                } else {
                    Wait::First(shutdown_begins.as_mut())
                }
            } else if *shutdown.borrow() {
                Wait::OnlyIfHere
            } else {
                Wait::UntilShutdown(shutdown_begins.as_mut())
            };
            let Some(first) = connection.next_request_byte(wait).await else {
                return Ending::Closed;
            };
            served_one = true;
            let fresh = scratch.insert(Scratch::take());
            fresh.client[0] = first;
            connection.buffered = 1;
        }
        let buffers = scratch.get_or_insert_with(Scratch::take);
        match connection.one_request(buffers, shared, shutdown).await {
            Next::KeepAlive => {}
            Next::Close => {
                if let Some(spare) = scratch.take() {
                    spare.give_back();
                }
                // FIN after the last response, not a reset.
                let _ = connection.client.shutdown().await;
                return Ending::Closed;
            }
            Next::Pingora(filled) => {
                shared.pingora_handoffs.fetch_add(1, Ordering::Relaxed);
                let mut client = connection.client;
                client.rewind(&buffers.client[..filled]);
                if let Some(spare) = scratch.take() {
                    spare.give_back();
                }
                return Ending::Pingora(client);
            }
        }
    }
}

/// How long to wait for a connection's next request.
enum Wait<'a, F> {
    /// A new connection: up to the keep-alive timeout; once the server
    /// begins shutting down, [`FIRST_REQUEST_AT_SHUTDOWN`] more.
    First(std::pin::Pin<&'a mut F>),
    /// A new connection accepted as the server shuts down.
    FirstAtShutdown,
    /// Up to the keep-alive timeout, or until the server begins shutting down.
    UntilShutdown(std::pin::Pin<&'a mut F>),
    /// Shutting down: only a request that is already here.
    OnlyIfHere,
}

enum Next {
    KeepAlive,
    Close,
    /// Hand the connection to pingora with this many bytes put back.
    Pingora(usize),
}

struct Connection {
    client: Box<L4Stream>,
    client_addr: ClientAddr,
    /// Bytes of the next request already in the client buffer.
    buffered: usize,
    /// The timeout of whatever the connection waits on.
    deadline: Deadline,
}

/// How one request ended, for the statistics and the client.
enum Failure {
    /// The chosen pool has no usable backend.
    NoBackend,
    /// Every connect attempt failed (each one already counted).
    Connect,
    /// The upstream failed after the connection was made; `answered` when
    /// the client already has the response head.
    Upstream {
        backend: usize,
        kind: FailureKind,
        answered: bool,
    },
    /// The client went away: not the pool's doing.
    Client,
}

/// A response delivered in full.
struct Delivered {
    backend: usize,
    status: u16,
    client_close: bool,
}

impl Connection {
    /// Writes `bytes` to the client, within `limit`.
    async fn write_client(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        write_within(&mut self.deadline, &mut *self.client, bytes, limit).await
    }

    /// Reads from the client into `buf`, within `limit`.
    async fn read_client(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        read_within(&mut self.deadline, &mut *self.client, buf, limit).await
    }

    /// Waits for the first byte of the next request, as `wait` says: `None`
    /// if the client closes, idles out, or the wait ends. No buffer is held
    /// while a connection idles.
    async fn next_request_byte<F: std::future::Future>(&mut self, wait: Wait<'_, F>) -> Option<u8> {
        let mut byte = [0u8; 1];
        let read = match wait {
            Wait::First(shutdown_begins) => {
                match self.read_until_shutdown(&mut byte, shutdown_begins).await {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.read_first_at_shutdown(&mut byte).await
                    }
                    read => read,
                }
            }
            Wait::FirstAtShutdown => self.read_first_at_shutdown(&mut byte).await,
            Wait::UntilShutdown(shutdown_begins) => {
                self.read_until_shutdown(&mut byte, shutdown_begins).await
            }
            Wait::OnlyIfHere => {
                let mut read = std::pin::pin!(self.client.read(&mut byte));
                std::future::poll_fn(|cx| match std::future::Future::poll(read.as_mut(), cx) {
                    std::task::Poll::Ready(done) => std::task::Poll::Ready(done),
                    std::task::Poll::Pending => {
                        std::task::Poll::Ready(Err(io::ErrorKind::WouldBlock.into()))
                    }
                })
                .await
            }
        };
        matches!(read, Ok(1)).then_some(byte[0])
    }

    /// Reads up to the keep-alive timeout; `Interrupted` as soon as the
    /// server begins shutting down.
    async fn read_until_shutdown<F: std::future::Future>(
        &mut self,
        byte: &mut [u8; 1],
        shutdown_begins: std::pin::Pin<&mut F>,
    ) -> io::Result<usize> {
        let client = &mut self.client;
        let read = async {
            tokio::select! {
                biased;
                read = client.read(byte) => read,
                _ = shutdown_begins => Err(io::ErrorKind::Interrupted.into()),
            }
        };
        self.deadline
            .bound(crate::keepalive::CLIENT_KEEPALIVE, read)
            .await
    }

    /// A new connection's first request while the server shuts down, up to
    /// [`FIRST_REQUEST_AT_SHUTDOWN`]. Counted in flight, so the process
    /// doesn't exit under it.
    async fn read_first_at_shutdown(&mut self, byte: &mut [u8; 1]) -> io::Result<usize> {
        let _in_flight = REQUESTS.start();
        self.deadline
            .bound(FIRST_REQUEST_AT_SHUTDOWN, self.client.read(byte))
            .await
    }

    async fn one_request(
        &mut self,
        scratch: &mut Scratch,
        shared: &Shared,
        shutdown: &ShutdownWatch,
    ) -> Next {
        let table = shared.table_arc();
        let mut filled = self.buffered;
        if !table.fast_path {
            return Next::Pingora(filled);
        }
        let request = loop {
            let bytes = &scratch.client[..filled];
            match head::parse_request(
                bytes,
                &table,
                &self.client_addr,
                fast_random(),
                &mut scratch.out,
            ) {
                Parsed::Done(request) => break request,
                Parsed::Pingora => return Next::Pingora(filled),
                Parsed::Partial if filled == scratch.client.len() => return Next::Pingora(filled),
                Parsed::Partial => {
                    match self
                        .read_client(&mut scratch.client[filled..], CLIENT_TIMEOUT)
                        .await
                    {
                        Ok(0) | Err(_) => return Next::Close,
                        Ok(read) => filled += read,
                    }
                }
            }
        };
        let _in_flight = REQUESTS.start();
        let started = Instant::now();

        // The body's first bytes (maybe all of it) came with the head; they
        // go out with the upstream head. Bytes after the body are the next
        // (pipelined) request.
        let in_buffer = (filled - request.head_len).min(clamp(request.body_len));
        let consumed = request.head_len + in_buffer;
        scratch
            .out
            .extend_from_slice(&scratch.client[request.head_len..consumed]);
        self.buffered = filled - consumed;
        scratch.client.copy_within(consumed..filled, 0);
        let body_left = request.body_len - in_buffer as u64;

        let Some(pool_id) = request.pool else {
            let _ = self.write_client(NO_POOL_RESPONSE, CLIENT_TIMEOUT).await;
            return Next::Close;
        };
        let pool = &table.pools[pool_id];
        let close_client = request.close || *shutdown.borrow();
        let result = self
            .exchange(scratch, &table, pool, &request, body_left, close_client)
            .await;
        self.finish(scratch, &table, pool, started, result).await
    }

    /// Sends the request to a backend of `pool` and the response back.
    async fn exchange(
        &mut self,
        scratch: &mut Scratch,
        table: &RoutingTable,
        pool: &Pool,
        request: &Request,
        body_left: u64,
        close_client: bool,
    ) -> Result<Delivered, Failure> {
        let server = &table.config.server;
        // Sent again only if idempotent and bodiless (so all of it is
        // still in `out`).
        let resendable = request.idempotent && request.body_len == 0;
        // After a reused connection turned out dead, the next attempt
        // connects afresh: the other idle ones are likely just as dead.
        let mut fresh_only = false;
        let mut exclude = None;
        let mut connect_retries = CONNECT_RETRIES;
        let mut stale_retries = STALE_RETRIES;
        'attempt: loop {
            let pick = pool
                .pick_backend(fast_random(), exclude)
                .or_else(|| pool.pick_backend(fast_random(), None));
            let Some(index) = pick else {
                return Err(Failure::NoBackend);
            };
            let backend = &pool.backends[index];
            let idle = if fresh_only {
                None
            } else {
                upstream::take_idle(backend.addr)
            };
            let (mut upstream, reused) = match idle {
                Some(stream) => (stream, true),
                None => match upstream::connect(backend.addr, server.connect_timeout).await {
                    Ok(stream) => (stream, false),
                    Err(error) => {
                        pool.count_failure(
                            Some(index),
                            connect_failure(&error),
                            &table.config.health,
                        );
                        let another = pool.pick_backend(fast_random(), Some(index)).is_some();
                        if connect_retries > 0 && another {
                            connect_retries -= 1;
                            exclude = Some(index);
                            continue 'attempt;
                        }
                        return Err(Failure::Connect);
                    }
                },
            };
            let upstream_failed = |kind| Failure::Upstream {
                backend: index,
                kind,
                answered: false,
            };
            // A reused connection the origin closed meanwhile fails here or
            // at the first read, before any response byte: send again.
            let mut may_resend = reused && resendable && stale_retries > 0;

            if let Err(error) = write_within(
                &mut self.deadline,
                &mut upstream,
                &scratch.out,
                server.write_timeout,
            )
            .await
            {
                if may_resend {
                    stale_retries -= 1;
                    fresh_only = true;
                    continue 'attempt;
                }
                return Err(upstream_failed(write_failure(&error)));
            }
            let mut context = ResponseContext {
                head_method: request.head_method,
                close_client,
                pool_header: table
                    .pool_header
                    .as_ref()
                    .map(|name| (name, &pool.name_header)),
            };
            let mut body_sent = true;
            let mut filled = 0;
            if body_left > 0 {
                (body_sent, filled) = self
                    .send_body(scratch, &mut upstream, body_left, &context, server)
                    .await
                    .map_err(|side| match side {
                        Side::Client => Failure::Client,
                        Side::Upstream(kind) => upstream_failed(kind),
                    })?;
                // The rest of the client's body is still on its way: the
                // connection can't carry another request.
                context.close_client |= !body_sent;
            }

            let response = loop {
                match head::parse_response(&scratch.upstream[..filled], &context, &mut scratch.out)
                {
                    Err(_) => return Err(upstream_failed(FailureKind::Other)),
                    Ok(Some(response)) if response.status < 200 => {
                        // 1xx: pass it on, then read the final response.
                        self.write_client(&scratch.out, server.write_timeout)
                            .await
                            .map_err(|_| Failure::Client)?;
                        scratch.upstream.copy_within(response.head_len..filled, 0);
                        filled -= response.head_len;
                        may_resend = false;
                    }
                    Ok(Some(response)) => break response,
                    Ok(None) if filled == scratch.upstream.len() => {
                        return Err(upstream_failed(FailureKind::Other))
                    }
                    Ok(None) => {
                        let read = read_within(
                            &mut self.deadline,
                            &mut upstream,
                            &mut scratch.upstream[filled..],
                            server.read_timeout,
                        )
                        .await;
                        let closed_unanswered = filled == 0
                            && match &read {
                                Ok(read) => *read == 0,
                                Err(error) => error.kind() != io::ErrorKind::TimedOut,
                            };
                        if closed_unanswered && may_resend {
                            stale_retries -= 1;
                            fresh_only = true;
                            continue 'attempt;
                        }
                        match read {
                            Ok(0) => return Err(upstream_failed(FailureKind::Reset)),
                            Err(error) => return Err(upstream_failed(read_failure(&error))),
                            Ok(read) => filled += read,
                        }
                    }
                }
            };

            let reusable = self
                .send_response_body(
                    scratch,
                    &mut upstream,
                    response.head_len,
                    filled,
                    response.framing,
                    server,
                )
                .await
                .map_err(|side| match side {
                    Side::Client => Failure::Client,
                    Side::Upstream(kind) => Failure::Upstream {
                        backend: index,
                        kind,
                        answered: true,
                    },
                })?;
            if reusable && !response.upstream_close && body_sent {
                upstream::put_idle(
                    backend.addr,
                    upstream,
                    server.upstream_keepalive_pool,
                    server.idle_timeout,
                );
            }
            return Ok(Delivered {
                backend: index,
                status: response.status,
                client_close: response.client_close,
            });
        }
    }

    /// Copies the rest of a `Content-Length` request body, client to
    /// upstream, while watching for the origin's answer: an origin may answer
    /// before it has read the whole body (a 413 or 401 to a large upload) and
    /// stop reading. Interim (1xx) responses are passed on and the upload
    /// goes on; at a final response the upload stops there.
    ///
    /// Returns whether the whole body was sent, and how many bytes of the
    /// origin's final response are already in `scratch.upstream`.
    async fn send_body(
        &mut self,
        scratch: &mut Scratch,
        upstream: &mut TcpStream,
        mut left: u64,
        context: &ResponseContext<'_>,
        server: &crate::config::ServerConfig,
    ) -> Result<(bool, usize), Side> {
        let (answer, mut sender) = upstream.split();
        let client = &mut *self.client;
        let deadline = &mut self.deadline;
        let mut answered = 0;
        while left > 0 {
            let want = clamp(left).min(scratch.client.len());
            let step = deadline
                .bound(CLIENT_TIMEOUT, async {
                    tokio::select! {
                        biased;
                        _ = answer.readable() => Ok(None),
                        read = client.read(&mut scratch.client[..want]) => read.map(Some),
                    }
                })
                .await
                .map_err(|_| Side::Client)?;
            let read = match step {
                Some(0) => return Err(Side::Client),
                Some(read) => read,
                None => {
                    match take_answer(&answer, scratch, &mut answered, context) {
                        Answer::Interim(head_len) => {
                            write_within(deadline, client, &scratch.out, server.write_timeout)
                                .await
                                .map_err(|_| Side::Client)?;
                            scratch.upstream.copy_within(head_len..answered, 0);
                            answered -= head_len;
                        }
                        Answer::NotYet => {}
                        Answer::Final => return Ok((false, answered)),
                    }
                    continue;
                }
            };
            let sent = deadline
                .bound(server.write_timeout, async {
                    tokio::select! {
                        biased;
                        _ = answer.readable() => Ok(false),
                        sent = sender.write_all(&scratch.client[..read]) => sent.map(|()| true),
                    }
                })
                .await
                .map_err(|e| Side::Upstream(write_failure(&e)))?;
            if !sent {
                // The origin answers mid-chunk: what it read of this chunk
                // is unknown, so the body can't go on; relay the answer.
                return Ok((false, answered));
            }
            left -= read as u64;
        }
        Ok((true, answered))
    }

    /// Sends the response head (in `scratch.out`) and its body to the
    /// client. `scratch.upstream[head_len..filled]` is the body's start.
    /// `Ok(true)` if the upstream connection ended cleanly after the message.
    async fn send_response_body(
        &mut self,
        scratch: &mut Scratch,
        upstream: &mut TcpStream,
        head_len: usize,
        filled: usize,
        framing: Framing,
        server: &crate::config::ServerConfig,
    ) -> Result<bool, Side> {
        let start = &scratch.upstream[head_len..filled];
        // What of the bytes received belongs to this message.
        let (mut left, mut scanner, first) = match framing {
            Framing::Empty => (0, None, 0),
            Framing::Length(len) => (len, None, clamp(len).min(start.len())),
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                match scanner.feed(start) {
                    Ok(Some(end)) => (0, None, end),
                    Ok(None) => (u64::MAX, Some(scanner), start.len()),
                    Err(_) => return Err(Side::Upstream(FailureKind::Other)),
                }
            }
            Framing::UntilClose => (u64::MAX, None, start.len()),
        };
        // Bytes past the message: the origin broke the framing; don't reuse.
        let mut clean = head_len + first == filled;
        if let Framing::Length(_) = framing {
            left -= first as u64;
        }
        scratch.out.extend_from_slice(&start[..first]);
        self.write_client(&scratch.out, server.write_timeout)
            .await
            .map_err(|_| Side::Client)?;

        while left > 0 {
            let want = clamp(left).min(scratch.upstream.len());
            let read = read_within(
                &mut self.deadline,
                upstream,
                &mut scratch.upstream[..want],
                server.read_timeout,
            )
            .await
            .map_err(|e| Side::Upstream(read_failure(&e)))?;
            if read == 0 {
                if framing == Framing::UntilClose {
                    return Ok(false);
                }
                return Err(Side::Upstream(FailureKind::Reset));
            }
            let mut send = read;
            match (&mut scanner, framing) {
                (Some(scanner), _) => {
                    if let Some(end) = scanner
                        .feed(&scratch.upstream[..read])
                        .map_err(|_| Side::Upstream(FailureKind::Other))?
                    {
                        clean &= end == read;
                        send = end;
                        left = 0;
                    }
                }
                (None, Framing::Length(_)) => left -= read as u64,
                _ => {}
            }
            self.write_client(&scratch.upstream[..send], server.write_timeout)
                .await
                .map_err(|_| Side::Client)?;
        }
        Ok(clean)
    }

    /// Counts the outcome and answers the client where the request failed.
    async fn finish(
        &mut self,
        scratch: &mut Scratch,
        table: &RoutingTable,
        pool: &Pool,
        started: Instant,
        result: Result<Delivered, Failure>,
    ) -> Next {
        let health = &table.config.health;
        let (class, next) = match result {
            Ok(delivered) => {
                let class = StatusClass::from_status(delivered.status);
                if let Some(backend) = pool.backends.get(delivered.backend) {
                    if class == StatusClass::S5xx {
                        backend.health.observe_failure(pool, health);
                    } else {
                        backend.health.observe_success();
                    }
                }
                let next = if delivered.client_close {
                    Next::Close
                } else {
                    Next::KeepAlive
                };
                (class, next)
            }
            Err(Failure::Client) => return Next::Close,
            Err(Failure::NoBackend) => {
                scratch.out.clear();
                write_no_backend(&mut scratch.out, &pool.name);
                let _ = self.write_client(&scratch.out, CLIENT_TIMEOUT).await;
                (StatusClass::Error, Next::Close)
            }
            Err(Failure::Connect) => {
                let _ = self.write_client(BAD_GATEWAY, CLIENT_TIMEOUT).await;
                (StatusClass::Error, Next::Close)
            }
            Err(Failure::Upstream {
                backend,
                kind,
                answered,
            }) => {
                pool.count_failure(Some(backend), kind, health);
                if !answered {
                    let _ = self.write_client(BAD_GATEWAY, CLIENT_TIMEOUT).await;
                }
                (StatusClass::Error, Next::Close)
            }
        };
        pool.record_finished(class, started);
        next
    }
}

/// What the origin sent while the request body was still going up.
enum Answer {
    /// A whole interim (1xx) head, `.0` bytes long, written for the client
    /// into `scratch.out`.
    Interim(usize),
    /// Not a whole head yet.
    NotYet,
    /// The start of the final response (or the connection's end, or bytes
    /// that aren't a response): the response phase takes it from here.
    Final,
}

/// Reads what the origin has sent into `scratch.upstream[*answered..]` and
/// tells what it is. Never waits.
fn take_answer(
    answer: &tokio::net::tcp::ReadHalf<'_>,
    scratch: &mut Scratch,
    answered: &mut usize,
    context: &ResponseContext<'_>,
) -> Answer {
    if *answered == scratch.upstream.len() {
        return Answer::Final;
    }
    match answer.try_read(&mut scratch.upstream[*answered..]) {
        Ok(0) => return Answer::Final,
        Ok(read) => *answered += read,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Answer::NotYet,
        Err(_) => return Answer::Final,
    }
    match head::parse_response(&scratch.upstream[..*answered], context, &mut scratch.out) {
        Ok(Some(response)) if response.status < 200 => Answer::Interim(response.head_len),
        Ok(None) => Answer::NotYet,
        Ok(Some(_)) | Err(_) => Answer::Final,
    }
}

/// Which side of the exchange failed while a body was moving.
enum Side {
    Client,
    Upstream(FailureKind),
}

const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\
cache-control: private, no-store\r\nconnection: close\r\n\r\n";

const NO_POOL_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
cache-control: private, no-store\r\nconnection: close\r\n\r\n";

/// The same 503 the pingora path sends when a pool has no usable backend.
fn write_no_backend(out: &mut Vec<u8>, pool: &str) {
    use std::io::Write;
    let body = no_backend_body(pool);
    let _ = write!(
        out,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: {}\r\ncache-control: private, no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn clamp(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

async fn read_within<R: AsyncRead + Unpin + ?Sized>(
    deadline: &mut Deadline,
    reader: &mut R,
    buf: &mut [u8],
    limit: Duration,
) -> io::Result<usize> {
    deadline.bound(limit, reader.read(buf)).await
}

async fn write_within<W: AsyncWrite + Unpin + ?Sized>(
    deadline: &mut Deadline,
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    deadline.bound(limit, write).await
}

fn connect_failure(error: &io::Error) -> FailureKind {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::ConnectRefused,
        io::ErrorKind::TimedOut => FailureKind::ConnectTimeout,
        _ => FailureKind::Reset,
    }
}

fn read_failure(error: &io::Error) -> FailureKind {
    match error.kind() {
        io::ErrorKind::TimedOut => FailureKind::ReadTimeout,
        _ => FailureKind::Reset,
    }
}

fn write_failure(error: &io::Error) -> FailureKind {
    match error.kind() {
        io::ErrorKind::TimedOut => FailureKind::WriteTimeout,
        _ => FailureKind::Reset,
    }
}

#[cfg(test)]
mod tests {
    /// Every plain client connection's task holds this future for its whole
    /// life, idle or not: it must stay small (10 000 idle clients).
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let stream: super::L4Stream = tcp.into();
        let table = crate::routing::RoutingTable::from_config_text(
            "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[split]\nblue = 100\n",
        );
        let (shared, _publisher) = crate::shared::Shared::new(table);
        let (_shutdown, watch) = tokio::sync::watch::channel(false);
        let serve = super::serve(Box::new(stream), &shared, &watch);
        let size = std::mem::size_of_val(&serve);
        assert!(size <= 2048, "fastpath::serve future is {size} bytes");
    }
}
