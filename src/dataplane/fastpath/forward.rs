//! Sending a request up: the attempts on the pool's backends (a reused
//! idle connection or a new one; connect retry and pick with fallback by
//! [`crate::dataplane::exchange`]; a re-send when a reused connection turns
//! out closed), the request head, and the rest of the request body while
//! watching for an early answer. A chunked body is forwarded byte for byte
//! through the strict scanner of [`crate::dataplane::framing`]: broken
//! framing stops it before the bad bytes go up, and the client gets the
//! refusal.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

use super::client::Client;
use super::connection::{Connection, Delivered, Failure, Retry, CLIENT_TIMEOUT};
use super::head::{self, Request, ResponseContext};
use super::io::{
    clamp, connect_failure, read_now, write_failure, write_two_within, write_within, Side,
};
use super::relay::Head;
use super::scratch::Scratch;
use super::upstream::{self, IdlePool};
use crate::config::ServerConfig;
use crate::dataplane::exchange::Attempt;
use crate::dataplane::framing::{Body, ChunkedScanner, Reject};
use crate::routing::{Pool, RoutingTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Re-sends of an idempotent request whose reused upstream connection turned
/// out closed, on top of the connect retry.
const STALE_RETRIES: u8 = 2;

/// Re-sending a request whose reused upstream connection the origin had
/// closed before any response byte.
pub(super) struct Resend {
    /// Idempotent and bodiless (so all of it is still in `out`).
    resendable: bool,
    /// After a reused connection turned out dead, the next attempt
    /// connects afresh: the other idle ones are likely just as dead.
    pub fresh_only: bool,
    left: u8,
}

impl Resend {
    fn new(request: &Request) -> Resend {
        Resend {
            resendable: request.idempotent && request.body == Body::Length(0),
            fresh_only: false,
            left: STALE_RETRIES,
        }
    }

    /// May a request on this connection be sent again if it fails before
    /// any response byte?
    pub fn allowed(&self, reused: bool) -> bool {
        reused && self.resendable && self.left > 0
    }

    pub fn begin(&mut self) {
        self.left -= 1;
        self.fresh_only = true;
    }
}

/// What is left of a request body after the bytes that came with its head.
pub(super) enum BodyLeft {
    Length(u64),
    Chunked(ChunkedScanner),
}

impl BodyLeft {
    pub(super) fn done(&self) -> bool {
        matches!(self, BodyLeft::Length(0))
    }
}

/// How long a refused client may go on sending before its connection is
/// closed anyway (so that the refusal is read, not lost to a reset).
const LINGER: Duration = Duration::from_secs(1);
/// How much of a refused client's bytes are read and dropped at most.
const LINGER_BYTES: usize = 1024 * 1024;

/// One attempt's upstream connection.
pub(super) struct Upstream {
    pub stream: TcpStream,
    pub reused: bool,
}

impl<C: Client> Connection<C> {
    /// The body's first bytes (maybe all of it) came with the head; they go
    /// out with the upstream head (appended to `scratch.out`). Bytes after
    /// the body are the next (pipelined) request: they move to the front of
    /// the client buffer. A chunked body whose framing is already broken
    /// here is refused before anything is sent.
    pub(super) fn body_start(
        &mut self,
        scratch: &mut Scratch,
        request: &Request,
        filled: usize,
    ) -> Result<BodyLeft, Reject> {
        let arrived = &scratch.client[request.head_len..filled];
        let (in_buffer, left) = match request.body {
            Body::Length(len) => {
                let in_buffer = arrived.len().min(clamp(len));
                (in_buffer, BodyLeft::Length(len - in_buffer as u64))
            }
            Body::Chunked => {
                let mut scanner = ChunkedScanner::default();
                match scanner.feed(arrived) {
                    Ok(Some(end)) => (end, BodyLeft::Length(0)),
                    Ok(None) => (arrived.len(), BodyLeft::Chunked(scanner)),
                    Err(_) => return Err(Reject::BadRequest("malformed chunked body")),
                }
            }
        };
        let consumed = request.head_len + in_buffer;
        scratch
            .out
            .extend_from_slice(&scratch.client[request.head_len..consumed]);
        self.buffered = filled - consumed;
        scratch.client.copy_within(consumed..filled, 0);
        Ok(left)
    }

    /// Answers a request the framing rules refuse, and closes: the answer
    /// first, then the write side, then whatever the client still sends is
    /// read and dropped for a moment (a close with unread bytes would reset
    /// the connection, and the client could lose the answer).
    pub(super) async fn refuse(&mut self, scratch: &mut Scratch, reject: Reject) {
        if self
            .write_client(reject.response(), CLIENT_TIMEOUT)
            .await
            .is_err()
        {
            return;
        }
        let _ = self.client.shutdown().await;
        let client = &mut self.client;
        // The upstream buffer is free by now: the drain's sink.
        let sink = &mut scratch.upstream;
        let drain = async {
            let mut dropped = 0;
            while dropped < LINGER_BYTES {
                match client.read(sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => dropped += read,
                }
            }
        };
        let _ = self
            .deadline
            .bound(LINGER, async {
                drain.await;
                Ok(())
            })
            .await;
    }

    /// Sends the request to a backend of `pool` and the response back.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn exchange(
        &mut self,
        scratch: &mut Scratch,
        table: &RoutingTable,
        pool: &Pool,
        idle: &IdlePool,
        attempt: &mut Attempt,
        request: &Request,
        mut body_left: BodyLeft,
        close_client: bool,
    ) -> Result<Delivered, Failure> {
        let server = &table.config.server;
        let mut resend = Resend::new(request);
        let context = ResponseContext {
            head_method: request.head_method,
            close_client,
            pool_header: table
                .pool_header
                .as_ref()
                .map(|name| (name, &pool.name_header)),
            set_cookie: table.cookie_issuer.as_ref().zip(request.issued),
        };
        loop {
            let upstream = self
                .connect(table, pool, idle, attempt, resend.fresh_only)
                .await?;
            let tried = self
                .try_once(
                    scratch,
                    server,
                    idle,
                    pool,
                    attempt,
                    upstream,
                    &mut resend,
                    &mut body_left,
                    &context,
                )
                .await;
            match tried {
                Ok(delivered) => return Ok(delivered),
                Err(Retry::Resend) => resend.begin(),
                Err(Retry::Fail(failure)) => return Err(failure),
            }
        }
    }

    /// A connection to a backend of `pool`: an idle one unless `fresh_only`,
    /// else a new one, retried on another backend as [`Attempt`] decides.
    async fn connect(
        &mut self,
        table: &RoutingTable,
        pool: &Pool,
        idle: &IdlePool,
        attempt: &mut Attempt,
        fresh_only: bool,
    ) -> Result<Upstream, Failure> {
        let server = &table.config.server;
        loop {
            let Some(index) = attempt.pick(pool) else {
                return Err(Failure::NoBackend);
            };
            let backend = &pool.backends[index];
            if !fresh_only {
                if let Some(stream) = idle.take_idle(backend.addr) {
                    return Ok(Upstream {
                        stream,
                        reused: true,
                    });
                }
            }
            match upstream::connect(backend.addr, server.connect_timeout).await {
                Ok(stream) => {
                    return Ok(Upstream {
                        stream,
                        reused: false,
                    })
                }
                Err(error) => {
                    let kind = connect_failure(&error);
                    if !attempt.connect_failed(pool, kind, &table.config.health) {
                        return Err(Failure::Connect);
                    }
                }
            }
        }
    }

    /// One attempt on one upstream connection: head and body up, response
    /// down, and the connection back to the idle pool when it can carry
    /// another request.
    #[allow(clippy::too_many_arguments)]
    async fn try_once(
        &mut self,
        scratch: &mut Scratch,
        server: &ServerConfig,
        idle: &IdlePool,
        pool: &Pool,
        attempt: &Attempt,
        upstream: Upstream,
        resend: &mut Resend,
        body_left: &mut BodyLeft,
        context: &ResponseContext<'_>,
    ) -> Result<Delivered, Retry> {
        let Upstream {
            stream: mut upstream,
            reused,
        } = upstream;
        // A reused connection the origin closed meanwhile fails here or
        // at the first read, before any response byte: send again.
        let may_resend = resend.allowed(reused);
        let upstream_failed = |kind| Failure::Upstream {
            kind,
            answered: false,
        };
        // The body's next bytes, when the client has sent them already, go
        // up in the same write as the head (one `writev`: a 16 KiB POST's
        // head and body do not fit the client buffer together, so the
        // body's tail is a read of its own).
        let mut with_head = 0;
        if let BodyLeft::Length(len) = body_left {
            if *len > 0 && self.buffered == 0 {
                let want = clamp(*len).min(scratch.client.len());
                if let Some(read) = read_now(&mut self.client, &mut scratch.client[..want]).await {
                    with_head = read;
                    *len -= read as u64;
                }
            }
        }
        if let Err(error) = write_two_within(
            &mut self.deadline,
            &mut upstream,
            &scratch.out,
            &scratch.client[..with_head],
            server.write_timeout,
        )
        .await
        {
            if may_resend {
                return Err(Retry::Resend);
            }
            return Err(upstream_failed(write_failure(&error)).into());
        }
        let mut context = ResponseContext { ..*context };
        let mut body_sent = true;
        let mut filled = 0;
        if !body_left.done() {
            (body_sent, filled) = self
                .send_body(scratch, &mut upstream, body_left, &context, server)
                .await
                .map_err(|side| match side {
                    Side::Client => Failure::Client,
                    Side::BadRequestBody => {
                        Failure::Refused(Reject::BadRequest("malformed chunked body"))
                    }
                    Side::Upstream(kind) | Side::Unframed(kind) => upstream_failed(kind),
                })?;
            // The rest of the client's body is still on its way: the
            // connection can't carry another request.
            context.close_client |= !body_sent;
        }

        let Head { response, filled } = self
            .response_head(scratch, &mut upstream, filled, &context, server, may_resend)
            .await?;
        scratch.log.answered(response.status);

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
                // The request body was all sent before the response phase.
                Side::Client | Side::BadRequestBody => Failure::Client,
                Side::Upstream(kind) => Failure::Upstream {
                    kind,
                    answered: true,
                },
                // Broken before the head went out: the client gets a 502.
                Side::Unframed(kind) => Failure::Upstream {
                    kind,
                    answered: false,
                },
            })?;
        if reusable && !response.upstream_close && body_sent {
            if let Some(backend) = attempt.backend().and_then(|i| pool.backends.get(i)) {
                idle.put_idle(
                    backend.addr,
                    upstream,
                    server.upstream_keepalive_pool,
                    server.idle_timeout,
                );
            }
        }
        Ok(Delivered {
            status: response.status,
            client_close: response.client_close,
        })
    }

    /// Copies the rest of a request body (by length, or chunked through the
    /// scanner), client to upstream, while watching for the origin's answer: an origin may answer
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
        left: &mut BodyLeft,
        context: &ResponseContext<'_>,
        server: &ServerConfig,
    ) -> Result<(bool, usize), Side> {
        let (answer, mut sender) = upstream.split();
        let client = &mut self.client;
        let deadline = &mut self.deadline;
        let mut answered = 0;
        while !left.done() {
            let want = match left {
                BodyLeft::Length(len) => clamp(*len).min(scratch.client.len()),
                BodyLeft::Chunked(_) => scratch.client.len(),
            };
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
                        Early::Interim(head_len) => {
                            write_within(deadline, client, &scratch.out, server.write_timeout)
                                .await
                                .map_err(|_| Side::Client)?;
                            scratch.upstream.copy_within(head_len..answered, 0);
                            answered -= head_len;
                        }
                        Early::NotYet => {}
                        Early::Final => return Ok((false, answered)),
                    }
                    continue;
                }
            };
            // The part of this read that is body; after it, the next
            // (pipelined) request.
            let body = match left {
                BodyLeft::Length(len) => {
                    *len -= read as u64;
                    read
                }
                BodyLeft::Chunked(scanner) => match scanner.feed(&scratch.client[..read]) {
                    Ok(Some(end)) => {
                        *left = BodyLeft::Length(0);
                        end
                    }
                    Ok(None) => read,
                    Err(_) => return Err(Side::BadRequestBody),
                },
            };
            let sent = deadline
                .bound(server.write_timeout, async {
                    tokio::select! {
                        biased;
                        _ = answer.readable() => Ok(false),
                        sent = sender.write_all(&scratch.client[..body]) => sent.map(|()| true),
                    }
                })
                .await
                .map_err(|e| Side::Upstream(write_failure(&e)))?;
            if !sent {
                // The origin answers mid-chunk: what it read of this chunk
                // is unknown, so the body can't go on; relay the answer.
                return Ok((false, answered));
            }
            if body < read {
                scratch.client.copy_within(body..read, 0);
                self.buffered = read - body;
            }
        }
        Ok((true, answered))
    }
}

/// What the origin sent while the request body was still going up.
enum Early {
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
) -> Early {
    if *answered == scratch.upstream.len() {
        return Early::Final;
    }
    match answer.try_read(&mut scratch.upstream[*answered..]) {
        Ok(0) => return Early::Final,
        Ok(read) => *answered += read,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Early::NotYet,
        Err(_) => return Early::Final,
    }
    match head::parse_response(&scratch.upstream[..*answered], context, &mut scratch.out) {
        Ok(Some(response)) if response.status < 200 => Early::Interim(response.head_len),
        Ok(None) => Early::NotYet,
        Ok(Some(_)) | Err(_) => Early::Final,
    }
}
