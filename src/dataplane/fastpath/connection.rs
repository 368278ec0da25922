//! A client connection on the fast path: the keep-alive loop, the waits
//! for each next request (bounded by keep-alive, shutdown and the first
//! request of a connection accepted as shutdown begins), parsing a request
//! head, and counting and answering how the request ended.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncWriteExt, ReadBuf};

use super::client::{Arrival, Client};
use super::deadline::Deadline;
use super::head::{self, ClientAddr, Parsed};
use super::io::{read_within, write_within};
use super::scratch::Scratch;
use super::upstream::IdlePool;
use crate::access_log::capture::{answer_body_len, refused_entry};
use crate::dataplane::answers::{Answer, BAD_GATEWAY, NO_SHARE};
use crate::dataplane::exchange::{finish_unrouted, mirror_for, Attempt, Outcome};
use crate::dataplane::head_gate::refuse;
use crate::dataplane::head_limit::{answer_status, refusal, HeadDeadline, HeadLimits, TIMED_OUT};
use crate::routing::{fast_random, Pool};
use crate::shared::Shared;
use crate::stats::{FailureKind, Instant, REQUESTS};

/// How long a started request may pause before the client is given up on
/// (once its head is in: the head has `request_head_timeout` in all).
pub(super) const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection accepted just before shutdown has to send its
/// first request (it is counted in flight meanwhile, so the process waits
/// for it): its client is most likely sending it at that very moment.
const FIRST_REQUEST_AT_SHUTDOWN: Duration = Duration::from_secs(1);
/// Wakes in a row that found nothing to read before a connection is
/// closed (one is possible, see [`keep_alive`]; more would be a bug).
const STALE_WAKES_MAX: u32 = 4;

/// How a client connection left the fast path.
pub enum Ending {
    /// Closed (or idle timeout, or shutdown): nothing more to do.
    Closed,
    /// A request the fast path doesn't carry: its bytes were put back in the
    /// stream, and pingora serves the connection from here on. The head's
    /// deadline goes along when it has started one (a head that did not
    /// come in one read), so the head has one deadline, whoever reads it.
    Pingora(Stream, Option<HeadDeadline>),
}

/// What a connection's requests need besides the connection itself.
pub(super) struct Serving<'a> {
    pub shared: &'a Shared,
    pub idle: &'a IdlePool,
    pub shutdown: &'a ShutdownWatch,
}

/// Serves one client connection until it closes, or until a request needs
/// pingora.
pub(super) async fn keep_alive<C: Client>(
    mut connection: Connection<C>,
    serving: Serving<'_>,
) -> Ending {
    let shutdown = serving.shutdown;
    // Registered once for the connection's life (not per idle wait).
    let mut watch = shutdown.clone();
    let mut shutdown_begins = std::pin::pin!(watch.changed());
    let mut scratch: Option<Scratch> = None;
    let mut served_one = false;
    let mut stale_wakes = 0u32;
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
            let Some(arrival) = connection.next_arrival(wait).await else {
                return Ending::Closed;
            };
            let fresh = scratch.insert(Scratch::take());
            let read = match arrival {
                Arrival::Byte(first) => {
                    fresh.client[0] = first;
                    Some(Ok(1))
                }
                Arrival::Readable => connection.read_ready(&mut fresh.client).await,
                Arrival::Closed => Some(Ok(0)),
            };
            match read {
                Some(Ok(read)) if read > 0 => connection.buffered = read,
                // Closed (or failed): nothing to answer.
                Some(_) => {
                    if let Some(spare) = scratch.take() {
                        spare.give_back();
                    }
                    return Ending::Closed;
                }
                // Readiness left over from an earlier read that filled its
                // buffer: this read cleared it, so wait again (without the
                // buffers). It can't recur without a read in between;
                // bounded all the same.
                None => {
                    if let Some(spare) = scratch.take() {
                        spare.give_back();
                    }
                    stale_wakes += 1;
                    if stale_wakes > STALE_WAKES_MAX {
                        return Ending::Closed;
                    }
                    continue;
                }
            }
            stale_wakes = 0;
            served_one = true;
        }
        let buffers = scratch.get_or_insert_with(Scratch::take);
        match connection.one_request(buffers, &serving).await {
            Next::KeepAlive => {}
            Next::Close => {
                if let Some(spare) = scratch.take() {
                    spare.give_back();
                }
                // FIN after the last response, not a reset.
                let _ = connection.client.shutdown().await;
                return Ending::Closed;
            }
            Next::Refuse(answer) => {
                if let Some(spare) = scratch.take() {
                    spare.give_back();
                }
                // Boxed: only refused connections carry its state.
                Box::pin(refuse(&mut connection.client, answer)).await;
                return Ending::Closed;
            }
            Next::Pingora(filled, deadline) => {
                serving
                    .shared
                    .pingora_handoffs
                    .fetch_add(1, Ordering::Relaxed);
                let client = connection.client.hand_over(&buffers.client[..filled]);
                if let Some(spare) = scratch.take() {
                    spare.give_back();
                }
                return Ending::Pingora(client, deadline);
            }
        }
    }
}

/// How long to wait for a connection's next request.
pub(super) enum Wait<'a, F> {
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

pub(super) enum Next {
    KeepAlive,
    Close,
    /// Hand the connection to pingora with this many bytes put back.
    Pingora(usize, Option<HeadDeadline>),
    /// A head over a limit: answer this, close.
    Refuse(&'static [u8]),
}

pub(super) struct Connection<C> {
    pub client: C,
    pub client_addr: ClientAddr,
    /// Bytes of the next request already in the client buffer.
    pub buffered: usize,
    /// The timeout of whatever the connection waits on.
    pub deadline: Deadline,
    /// How long it may idle between requests (`server.idle_timeout`, as of
    /// its last request).
    pub idle: Duration,
}

/// How one request ended, for the statistics and the client.
pub(super) enum Failure {
    /// The chosen pool has no usable backend.
    NoBackend,
    /// Every connect attempt failed (each one already counted).
    Connect,
    /// The upstream failed after the connection was made; `answered` when
    /// the client already has the response head.
    Upstream { kind: FailureKind, answered: bool },
    /// The client went away: not the pool's doing.
    Client,
    /// The request body broke the framing rules mid-way: answered with the
    /// refusal (the origin never gets a complete request).
    Refused(crate::dataplane::framing::Reject),
}

/// Why an attempt did not deliver a response.
pub(super) enum Retry {
    /// The reused connection was dead: send the request again.
    Resend,
    Fail(Failure),
}

impl From<Failure> for Retry {
    fn from(failure: Failure) -> Retry {
        Retry::Fail(failure)
    }
}

/// A response delivered in full.
pub(super) struct Delivered {
    pub status: u16,
    pub client_close: bool,
}

impl<C: Client> Connection<C> {
    /// Writes `bytes` to the client, within `limit`.
    pub(super) async fn write_client(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        write_within(&mut self.deadline, &mut self.client, bytes, limit).await
    }

    /// Reads from the client into `buf`, within `limit`.
    pub(super) async fn read_client(
        &mut self,
        buf: &mut [u8],
        limit: Duration,
    ) -> io::Result<usize> {
        read_within(&mut self.deadline, &mut self.client, buf, limit).await
    }

    /// Waits for the next request, as `wait` says: `None` if the client
    /// closes, idles out, or the wait ends. No buffer is held while a
    /// connection idles.
    async fn next_arrival<F: std::future::Future>(&mut self, wait: Wait<'_, F>) -> Option<Arrival> {
        let arrived = match wait {
            Wait::First(shutdown_begins) => {
                match self.arrival_until_shutdown(shutdown_begins).await {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.first_arrival_at_shutdown().await
                    }
                    arrived => arrived,
                }
            }
            Wait::FirstAtShutdown => self.first_arrival_at_shutdown().await,
            Wait::UntilShutdown(shutdown_begins) => {
                self.arrival_until_shutdown(shutdown_begins).await
            }
            Wait::OnlyIfHere => {
                let client = &mut self.client;
                std::future::poll_fn(|cx| match client.poll_arrival(cx) {
                    Poll::Ready(done) => Poll::Ready(done),
                    Poll::Pending => Poll::Ready(Err(io::ErrorKind::WouldBlock.into())),
                })
                .await
            }
        };
        match arrived {
            Ok(Arrival::Closed) | Err(_) => None,
            Ok(arrival) => Some(arrival),
        }
    }

    /// Reads what a [`Arrival::Readable`] wait found into `buf`, without
    /// waiting: `None` if nothing was there after all.
    async fn read_ready(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        let client = &mut self.client;
        std::future::poll_fn(|cx| match Pin::new(&mut *client).poll_read(cx, &mut buf) {
            Poll::Ready(done) => Poll::Ready(Some(done.map(|()| buf.filled().len()))),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Waits up to the keep-alive timeout; `Interrupted` as soon as the
    /// server begins shutting down.
    async fn arrival_until_shutdown<F: std::future::Future>(
        &mut self,
        shutdown_begins: std::pin::Pin<&mut F>,
    ) -> io::Result<Arrival> {
        let client = &mut self.client;
        let arrival = async {
            tokio::select! {
                biased;
                arrived = std::future::poll_fn(|cx| client.poll_arrival(cx)) => arrived,
                _ = shutdown_begins => Err(io::ErrorKind::Interrupted.into()),
            }
        };
        self.deadline.bound(self.idle, arrival).await
    }

    /// A new connection's first request while the server shuts down, up to
    /// [`FIRST_REQUEST_AT_SHUTDOWN`]. Counted in flight, so the process
    /// doesn't exit under it.
    async fn first_arrival_at_shutdown(&mut self) -> io::Result<Arrival> {
        let _in_flight = REQUESTS.start();
        let client = &mut self.client;
        let arrival = std::future::poll_fn(|cx| client.poll_arrival(cx));
        self.deadline
            .bound(FIRST_REQUEST_AT_SHUTDOWN, arrival)
            .await
    }

    async fn one_request(&mut self, scratch: &mut Scratch, serving: &Serving<'_>) -> Next {
        let table = serving.shared.table_arc();
        let limits = HeadLimits::of(&table.config.server);
        self.idle = limits.idle;
        let mut filled = self.buffered;
        if !table.fast_path {
            return Next::Pingora(filled, None);
        }
        // Started at the first read that doesn't complete the head: within
        // a millisecond of its first byte, and never read for a head that
        // came whole.
        let mut deadline = None;
        let request = loop {
            let bytes = &scratch.client[..filled];
            let client = self.client_addr.ip;
            match head::parse_request(
                bytes,
                &table,
                &self.client_addr,
                fast_random(),
                &mut scratch.out,
            ) {
                Parsed::Done(request) if request.head_len > limits.max => {
                    return refused_by_limits(client, bytes, refusal(bytes, limits.max));
                }
                Parsed::Done(request) => break request,
                Parsed::Pingora => return Next::Pingora(filled, deadline),
                Parsed::Reject(reject) => {
                    log_refused(client, bytes, reject.status());
                    self.refuse(scratch, reject).await;
                    return Next::Close;
                }
                Parsed::Partial if filled >= limits.max => {
                    return refused_by_limits(client, bytes, refusal(bytes, limits.max));
                }
                // Bigger than this path's buffer, within the limit: the
                // gate in front of pingora reads the rest.
                Parsed::Partial if filled == scratch.client.len() => {
                    return Next::Pingora(filled, deadline)
                }
                Parsed::Partial => {
                    let left = deadline
                        .get_or_insert_with(|| HeadDeadline::starting_now(&limits))
                        .remaining();
                    match self.read_client(&mut scratch.client[filled..], left).await {
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            let bytes = &scratch.client[..filled];
                            return refused_by_limits(self.client_addr.ip, bytes, TIMED_OUT);
                        }
                        Ok(0) | Err(_) => return Next::Close,
                        Ok(read) => filled += read,
                    }
                }
            }
        };
        let _in_flight = REQUESTS.start();
        let started = Instant::now();
        scratch.log.take_h1(&scratch.out, request.why);

        let body_left = match self.body_start(scratch, &request, filled) {
            Ok(left) => left,
            Err(reject) => {
                let client = self.client_addr.ip;
                finish_unrouted(started, || crate::access_log::Entry {
                    why: "refused",
                    ..scratch.log.entry(client, reject.status(), started)
                });
                self.refuse(scratch, reject).await;
                return Next::Close;
            }
        };

        let Some(pool_id) = request.pool else {
            let client = self.client_addr.ip;
            finish_unrouted(started, || crate::access_log::Entry {
                bytes: answer_body_len(NO_SHARE),
                ..scratch.log.entry(client, 503, started)
            });
            let _ = self.write_client(NO_SHARE, CLIENT_TIMEOUT).await;
            return Next::Close;
        };
        let pool = &table.pools[pool_id];
        // A copy for `[mirror]` (one branch without it), handed off
        // without waiting: the head as it goes up, and the body if it came
        // whole with the head.
        if table.mirror.is_some() {
            let method = scratch.out.split(|b| *b == b' ').next().unwrap_or_default();
            if let Some(mirror) = mirror_for(&table, method) {
                let declared = match request.body {
                    crate::dataplane::framing::Body::Length(len) => Some(len),
                    crate::dataplane::framing::Body::Chunked => None,
                };
                crate::mirror::tap::offer_h1(mirror, &scratch.out, declared, body_left.done());
            }
        }
        let close_client = request.close || *serving.shutdown.borrow();
        let mut attempt = Attempt::new();
        let result = self
            .exchange(
                scratch,
                &table,
                pool,
                serving.idle,
                &mut attempt,
                &request,
                body_left,
                close_client,
            )
            .await;
        self.finish(
            scratch,
            &table.config.health,
            pool,
            &attempt,
            started,
            result,
        )
        .await
    }

    /// Counts the outcome ([`Attempt::finish`]) and answers the client where
    /// the request failed.
    async fn finish(
        &mut self,
        scratch: &mut Scratch,
        health: &crate::config::HealthConfig,
        pool: &Pool,
        attempt: &Attempt,
        started: Instant,
        result: Result<Delivered, Failure>,
    ) -> Next {
        let client = self.client_addr.ip;
        let (outcome, answer, status, next) = match result {
            Ok(delivered) => {
                let next = if delivered.client_close {
                    Next::Close
                } else {
                    Next::KeepAlive
                };
                let status = delivered.status;
                (Outcome::Answered(status), None, status, next)
            }
            // 499: the client went away first (NGINX's code for it).
            Err(Failure::Client) => (Outcome::ClientGone, None, 499, Next::Close),
            // Refused by the framing rules: not the pool's fault, so not
            // counted against it; logged with the status it was answered.
            Err(Failure::Refused(reject)) => {
                attempt.finish(pool, Outcome::ClientGone, started, health, || {
                    scratch.log.entry(client, reject.status(), started)
                });
                self.refuse(scratch, reject).await;
                return Next::Close;
            }
            Err(Failure::NoBackend) => {
                scratch.out.clear();
                Answer::NoBackend { pool: &pool.name }.write_h1(&mut scratch.out);
                let unanswered = Outcome::Failed {
                    backend_at_fault: false,
                };
                (unanswered, Some(&scratch.out[..]), 503, Next::Close)
            }
            Err(Failure::Connect) => {
                let unanswered = Outcome::Failed {
                    backend_at_fault: false,
                };
                (unanswered, Some(BAD_GATEWAY), 502, Next::Close)
            }
            Err(Failure::Upstream { kind, answered }) => (
                Outcome::UpstreamFailed(kind),
                (!answered).then_some(BAD_GATEWAY),
                scratch.log.status.filter(|_| answered).unwrap_or(502),
                Next::Close,
            ),
        };
        attempt.finish(pool, outcome, started, health, || {
            let entry = scratch.log.entry(client, status, started);
            match answer {
                Some(bytes) => crate::access_log::Entry {
                    bytes: answer_body_len(bytes),
                    ..entry
                },
                None => entry,
            }
        });
        // Only our own answers are written here, and they close: `next`
        // is not kept across the write (the connection future stays small).
        let Some(bytes) = answer else {
            return next;
        };
        let _ = write_within(&mut self.deadline, &mut self.client, bytes, CLIENT_TIMEOUT).await;
        Next::Close
    }
}

/// Logs a request refused before it was routed: over a head limit or
/// against the framing rules (not the pool's doing: no pool is counted).
fn log_refused(client: Option<std::net::IpAddr>, head: &[u8], status: u16) {
    finish_unrouted(Instant::now(), || refused_entry(client, head, status));
}

/// A head over `max_request_head` or past `request_head_timeout`: logged,
/// then answered by the caller with `answer` (431, 400 or 408).
fn refused_by_limits(client: Option<std::net::IpAddr>, head: &[u8], answer: &'static [u8]) -> Next {
    log_refused(client, head, answer_status(answer));
    Next::Refuse(answer)
}
