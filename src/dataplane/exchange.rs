//! The request policy both request paths call, so that each rule has one
//! home: which backend an attempt goes to (with fallback), whether a failed
//! connect is retried, what the outcome means for the backend's passive
//! health, and the one place an outcome is recorded: in the pool's
//! statistics and in the access log.
//!
//! The movers (the fast path's byte forwarding, pingora's proxy) only tell
//! this module what happened, as an [`Outcome`], and what the access log
//! line needs of the request, as an [`Entry`] made only while the log is
//! on. Everything here is a few atomics and array lookups: no lock, no
//! allocation, no clock read beyond the one latency reading.

use std::net::IpAddr;

use pingora::protocols::l4::socket::SocketAddr;

use crate::access_log::{self, Entry};
use crate::config::HealthConfig;
use crate::mirror::route::MirrorRoute;
use crate::routing::{fast_random, Pool, RoutingTable};
use crate::stats::{FailureKind, Instant, StatusClass};

/// Connect failures retried per request: once, on another backend of the
/// same pool (pingora may add its own retry of an idempotent request whose
/// reused keep-alive connection turned out dead; that one is not counted
/// here).
pub const CONNECT_RETRIES: u8 = 1;

/// One request's attempts on the backends of its pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attempt {
    /// The backend of the latest successful pick.
    last: Option<usize>,
    /// Not to be picked again (set when a retry should go elsewhere).
    avoid: Option<usize>,
    connect_retries: u8,
    /// The latest failed connect, for the access log's `upstream_failure`.
    connect_failure: Option<FailureKind>,
}

/// How a request ended, as the request path saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status reached the client.
    Answered(u16),
    /// A gRPC response whose `grpc-status` (header or trailer) is one of
    /// the pool's `grpc_error_codes`: a failure whatever its HTTP status
    /// (gRPC answers its errors with 200), counted as 5xx.
    GrpcFailed,
    /// The upstream failed after the connection was made.
    UpstreamFailed(FailureKind),
    /// No upstream answer, and nothing more to count against the pool:
    /// `backend_at_fault` when the backend of the last pick is to blame
    /// (an error on the way that was not a connect failure); connect
    /// failures and "no usable backend" were counted when they happened.
    Failed { backend_at_fault: bool },
    /// The client went away: not the pool's fault, not counted.
    ClientGone,
}

impl Attempt {
    pub const fn new() -> Attempt {
        Attempt {
            last: None,
            avoid: None,
            connect_retries: 0,
            connect_failure: None,
        }
    }

    /// The backend of the latest pick, if any.
    #[inline]
    pub fn backend(&self) -> Option<usize> {
        self.last
    }

    /// The next attempt goes to another backend than the last one when
    /// there is one (pingora's retry of a dead reused connection).
    #[inline]
    pub fn avoid_last(&mut self) {
        self.avoid = self.last;
    }

    /// A weighted pick of a usable backend, other than the one to avoid
    /// unless it is the only one left. `None`: the pool has no usable
    /// backend.
    #[inline]
    pub fn pick(&mut self, pool: &Pool) -> Option<usize> {
        let pick = pool
            .pick_backend(fast_random(), self.avoid)
            .or_else(|| pool.pick_backend(fast_random(), None));
        if pick.is_some() {
            self.last = pick;
        }
        pick
    }

    /// The connect to the last pick failed: counted against the pool and
    /// the backend now. True if the request should try another backend.
    pub fn connect_failed(
        &mut self,
        pool: &Pool,
        kind: FailureKind,
        health: &HealthConfig,
    ) -> bool {
        pool.count_failure(self.last, kind, health);
        self.connect_failure = Some(kind);
        let retry = self.connect_retries < CONNECT_RETRIES
            && pool.pick_backend(fast_random(), self.last).is_some();
        if retry {
            self.connect_retries += 1;
            self.avoid = self.last;
        }
        retry
    }

    /// Records how the request ended: passive health of the backend of the
    /// last pick, the pool's class and latency counts (since `started`),
    /// and the access log line (`log` is called only while the log is on).
    /// The only place a finished request is counted and logged.
    pub fn finish<'e>(
        &self,
        pool: &Pool,
        outcome: Outcome,
        started: Instant,
        health: &HealthConfig,
        log: impl FnOnce() -> Entry<'e>,
    ) {
        let backend = self.last.and_then(|i| pool.backends.get(i));
        let mut failure = self.connect_failure;
        let class = match outcome {
            Outcome::ClientGone => None,
            Outcome::Answered(status) => {
                let class = StatusClass::from_status(status);
                if let Some(backend) = backend {
                    if class == StatusClass::S5xx {
                        backend.health.observe_failure(pool, health);
                    } else {
                        backend.health.observe_success();
                    }
                }
                Some(class)
            }
            Outcome::GrpcFailed => {
                if let Some(backend) = backend {
                    backend.health.observe_failure(pool, health);
                }
                Some(StatusClass::S5xx)
            }
            Outcome::UpstreamFailed(kind) => {
                pool.count_failure(self.last, kind, health);
                failure = Some(kind);
                Some(StatusClass::Error)
            }
            Outcome::Failed { backend_at_fault } => {
                if let (true, Some(backend)) = (backend_at_fault, backend) {
                    backend.health.observe_failure(pool, health);
                }
                Some(StatusClass::Error)
            }
        };
        // Client aborts are not the pool's: logged, not counted.
        let duration = match class {
            Some(class) => pool.record_finished(class, started),
            None => Instant::now().saturating_duration_since(started),
        };
        if access_log::enabled() {
            let mut entry = log();
            entry.pool = Some(&pool.name);
            entry.backend = backend.map(|b| b.name.as_str());
            entry.duration = duration;
            entry.failure = failure;
            access_log::record(&entry);
        }
    }
}

/// A request answered before any pool was chosen (no pool has a share, or
/// pingora refused it before routing): logged, counted for no pool.
pub fn finish_unrouted<'e>(started: Instant, log: impl FnOnce() -> Entry<'e>) {
    if access_log::enabled() {
        let mut entry = log();
        entry.duration = Instant::now().saturating_duration_since(started);
        access_log::record(&entry);
    }
}

/// The mirror to copy this request to, if `[mirror]` is on and the
/// request (by `method`, and the mirror's share) is one to copy: one
/// branch without a mirror. Both paths then hand the copy to
/// [`crate::mirror::tap`], which never waits.
#[inline]
pub fn mirror_for<'t>(table: &'t RoutingTable, method: &[u8]) -> Option<&'t MirrorRoute> {
    table
        .mirror
        .as_ref()
        .filter(|mirror| mirror.wants(method, fast_random()))
}

/// The client's IP address, from the peer address of its connection (the
/// routing key of `sticky = "ip"` and the `X-Forwarded-For` entry).
#[inline]
pub fn client_ip(peer: Option<&SocketAddr>) -> Option<IpAddr> {
    peer.and_then(|addr| addr.as_inet()).map(|addr| addr.ip())
}
