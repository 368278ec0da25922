//! The pingora `ProxyHttp` adapter: the request path of everything the fast
//! path hands over (TLS, h2, h2c, and the HTTP/1.1 it doesn't take).
//!
//! Per request: load the routing table once (the request keeps that revision
//! for its whole life, retries included), choose the pool, and let
//! [`super::exchange`] pick backends, decide connect retries and record the
//! outcome; this file only translates pingora's hooks and errors into that
//! policy. Nothing here locks, logs or allocates beyond what pingora's API
//! itself requires (the boxed peer).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::L4Connect;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use super::answers::Answer;
use super::exchange::{client_ip, finish_unrouted, mirror_for, Attempt, Outcome};
use super::framing::stream::{body_refused, refused, refused_line, REFUSED_MARK};
use super::log_fields::{self, Noted};
use super::strict_upstream::{self, StrictConnect};
use crate::access_log::capture::refused_entry;
use crate::routing::{fast_random, PoolId, RoutingTable, StickyId};
use crate::shared::Shared;
use crate::stats::{FailureKind, InFlightToken, Instant, REQUESTS};

/// `why` of a request the framing rules refused before routing.
const REFUSED: &str = "refused";

pub struct SwitchyardProxy {
    shared: Arc<Shared>,
    /// The connect of plaintext HTTP/1.1 peers: their responses are read
    /// through the strict framing rules ([`super::strict_upstream`]).
    strict: Arc<dyn L4Connect + Send + Sync>,
    /// The same, typed: HTTP/1.1-over-TLS peers get a connect of their own
    /// that shares its idle pools.
    strict_tls: Arc<StrictConnect>,
}

impl SwitchyardProxy {
    pub fn new(shared: Arc<Shared>) -> Self {
        let strict_tls = StrictConnect::new(Arc::clone(&shared));
        let strict: Arc<dyn L4Connect + Send + Sync> = Arc::clone(&strict_tls) as _;
        SwitchyardProxy {
            shared,
            strict,
            strict_tls,
        }
    }
}

/// Per-request state carried between pingora's hooks.
pub struct RequestCtx {
    started: Instant,
    /// The table this request was routed with (set on the first pick).
    table: Option<Arc<RoutingTable>>,
    pool: PoolId,
    /// Backend picks and connect retries (a retry never picks the previous
    /// backend again).
    attempt: Attempt,
    /// Switchyard answers the request itself (no share, no usable backend).
    answer: Option<Refused>,
    /// The upstream's `grpc-status` (header or trailer) is one of the
    /// pool's error codes.
    grpc_failed: bool,
    /// A sticky id issued to this new client, set as a cookie on the answer.
    issued: Option<StickyId>,
    /// For the access log: why the pool, the id made for the request, when
    /// the upstream's head arrived, what `fail_to_proxy` answered.
    why: &'static str,
    request_id: Option<[u8; 32]>,
    upstream_at: Option<Instant>,
    answered: u16,
    /// The request's copy for `[mirror]`, made as it goes up.
    mirror: crate::mirror::tap::Capture,
    /// Keeps the request counted as in flight until the context drops, so
    /// shutdown can exit as soon as the last one finishes.
    _in_flight: InFlightToken,
}

/// What switchyard answered itself, remembered until `fail_to_proxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    NoShare,
    NoBackend,
}

fn session_client_ip(session: &Session) -> Option<IpAddr> {
    client_ip(session.client_addr())
}

/// Maps pingora's error type to the failure kinds we count and export.
fn failure_kind(error: &Error) -> FailureKind {
    match error.etype() {
        ErrorType::ConnectRefused => FailureKind::ConnectRefused,
        ErrorType::ConnectTimedout => FailureKind::ConnectTimeout,
        ErrorType::ReadTimedout => FailureKind::ReadTimeout,
        ErrorType::WriteTimedout => FailureKind::WriteTimeout,
        ErrorType::ConnectionClosed
        | ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::ConnectError
        | ErrorType::SocketError => FailureKind::Reset,
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => FailureKind::Tls,
        _ => FailureKind::Other,
    }
}

fn is_connect_failure(error: &Error) -> bool {
    matches!(
        error.etype(),
        ErrorType::ConnectRefused
            | ErrorType::ConnectTimedout
            | ErrorType::ConnectError
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectProxyFailure
            | ErrorType::SocketError
            | ErrorType::BindError
    )
}

#[async_trait]
impl ProxyHttp for SwitchyardProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            table: None,
            pool: 0,
            attempt: Attempt::new(),
            answer: None,
            grpc_failed: false,
            issued: None,
            why: "",
            request_id: None,
            upstream_at: None,
            answered: 0,
            mirror: crate::mirror::tap::Capture::Undecided,
            _in_flight: REQUESTS.start(),
        }
    }

    /// A head the framing rules refused reaches pingora as a marked
    /// stand-in ([`super::framing::stream`]): answered here with the
    /// refusal's status, and the connection closes.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let marked = session.req_header().headers.contains_key(REFUSED_MARK);
        let Some(reject) = refused(session.stream(), marked) else {
            return Ok(false);
        };
        // Logged with the refused head's own first line (see `logging`).
        ctx.why = REFUSED;
        ctx.answered = reject.status();
        session.set_keepalive(None);
        if let Err(e) = session.respond_error(reject.status()).await {
            log::debug!("could not send {} to client: {e}", reject.status());
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let table = match &ctx.table {
            Some(table) => Arc::clone(table),
            None => {
                let table = self.shared.table_arc();
                let choice = table.choose_pool(
                    &session.req_header().headers,
                    session_client_ip(session),
                    fast_random(),
                );
                let Some(choice) = choice else {
                    ctx.answer = Some(Refused::NoShare);
                    return Err(Error::explain(
                        ErrorType::HTTPStatus(503),
                        "no pool has a share",
                    ));
                };
                ctx.pool = choice.pool();
                ctx.issued = choice.issued();
                ctx.why = choice.why();
                ctx.table = Some(Arc::clone(&table));
                table
            }
        };
        let pool = &table.pools[ctx.pool];
        // A retry (after a connect failure, or pingora's retry of a dead
        // reused connection) goes to another backend when there is one.
        if ctx.attempt.backend().is_some() {
            ctx.attempt.avoid_last();
        }
        match ctx.attempt.pick(pool) {
            Some(index) => {
                let mut peer = pool.backends[index].peer.clone();
                if StrictConnect::applies_to(&peer) {
                    peer.options.custom_l4 = Some(Arc::clone(&self.strict));
                } else if let Some(config) = pool
                    .probe_tls
                    .as_ref()
                    .filter(|_| strict_upstream::tls::applies_to(&peer))
                {
                    // switchyard does the TLS itself, so that the framing
                    // rules see the decrypted response.
                    peer = strict_upstream::tls::plaintext_peer(&self.strict_tls, &peer, config)?;
                }
                Ok(Box::new(peer))
            }
            None => {
                ctx.answer = Some(Refused::NoBackend);
                Err(Error::explain(
                    ErrorType::HTTPStatus(503),
                    "pool has no usable backend",
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(ip) = session_client_ip(session) {
            append_forwarded_for(upstream_request, ip)?;
        }
        if let Some(id) = crate::access_log::capture::missing_request_id(&upstream_request.headers)
        {
            let value = http::HeaderValue::from_bytes(&id)
                .or_err(ErrorType::InternalError, "formatting x-request-id")?;
            upstream_request.insert_header(crate::access_log::capture::REQUEST_ID, value)?;
            ctx.request_id = Some(id);
        }
        if let Some(table) = &ctx.table {
            if table.mirror.is_some() {
                let mirror = mirror_for(table, upstream_request.method.as_str().as_bytes());
                let no_body = session.is_body_empty();
                ctx.mirror.head(mirror, upstream_request, no_body);
            }
        }
        Ok(())
    }

    /// The body on its way up fills the request's mirror copy, if any.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.mirror.body(body.as_ref(), end_of_stream);
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut pingora::http::HMap,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        note_grpc_status(ctx, trailers);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A trailers-only gRPC answer carries its status in the head.
        note_grpc_status(ctx, &upstream_response.headers);
        if crate::access_log::enabled() {
            ctx.upstream_at = Some(Instant::now());
        }
        if let Some(table) = &ctx.table {
            if let (Some(issuer), Some(id)) = (&table.cookie_issuer, &ctx.issued) {
                let mut value = Vec::with_capacity(96);
                issuer.write_value(&mut value, id);
                let value = http::HeaderValue::from_bytes(&value)
                    .map_err(|e| Error::because(ErrorType::InternalError, "sticky cookie", e))?;
                upstream_response.append_header(http::header::SET_COOKIE, value)?;
            }
            if let Some(header) = &table.pool_header {
                let value = table.pools[ctx.pool].name_header.clone();
                upstream_response.insert_header(header.clone(), value)?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut error: Box<Error>,
    ) -> Box<Error> {
        let Some(table) = &ctx.table else {
            return error;
        };
        let pool = &table.pools[ctx.pool];
        let retry = ctx
            .attempt
            .connect_failed(pool, failure_kind(&error), &table.config.health);
        error.set_retry(retry);
        error
    }

    /// pingora's retry policy (an idempotent request whose retry buffer is
    /// whole may go again when its connection was reused), knowing what
    /// pingora can't: a strict socket's connection came from switchyard's
    /// own idle pool (pingora sees every one as new), and a response that
    /// broke its framing is the origin's answer, not a dead connection.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        match strict_upstream::cause(&e) {
            _ if !replayable => e.set_retry(false),
            strict_upstream::Cause::Unframed => e.set_retry(false),
            strict_upstream::Cause::Stale => e.set_retry(true),
            strict_upstream::Cause::Other => e.retry.decide_reuse(client_reused),
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = if let Some(refused) = ctx.answer {
            let answer = match refused {
                Refused::NoShare => Answer::NoShare,
                Refused::NoBackend => Answer::NoBackend {
                    pool: ctx
                        .table
                        .as_ref()
                        .map(|t| t.pools[ctx.pool].name.as_str())
                        .unwrap_or("?"),
                },
            };
            send_answer(session, answer).await
        } else if body_refused(session.stream()) {
            // The request body broke the chunked framing rules: a 400 unless
            // the origin's answer is already on its way.
            if session.response_written().is_some() {
                0
            } else {
                if let Err(e) = session.respond_error(400).await {
                    log::debug!("could not send 400 to client: {e}");
                }
                400
            }
        } else {
            let code = match error.etype() {
                ErrorType::HTTPStatus(code) => *code,
                _ => match error.esource() {
                    ErrorSource::Upstream => 502,
                    ErrorSource::Downstream => match error.etype() {
                        ErrorType::WriteError
                        | ErrorType::ReadError
                        | ErrorType::ConnectionClosed => 0,
                        _ => 400,
                    },
                    ErrorSource::Internal | ErrorSource::Unset => 500,
                },
            };
            if code > 0 {
                if let Err(e) = session.respond_error(code).await {
                    log::debug!("could not send {code} to client: {e}");
                }
            }
            code
        };
        ctx.answered = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        // A request that never reached pool selection (malformed, or refused
        // before routing) belongs to no pool.
        let noted = Noted {
            why: ctx.why,
            request_id: ctx.request_id.as_ref(),
            upstream: ctx
                .upstream_at
                .map(|at| at.saturating_duration_since(ctx.started)),
            answered: ctx.answered,
        };
        let Some(table) = &ctx.table else {
            if ctx.why == REFUSED {
                let client = client_ip(session.client_addr());
                let line = refused_line(session.stream());
                finish_unrouted(ctx.started, || refused_entry(client, line, ctx.answered));
            } else {
                finish_unrouted(ctx.started, || log_fields::entry(session, noted));
            }
            return;
        };
        let pool = &table.pools[ctx.pool];
        let outcome = match error {
            Some(e) if *e.esource() == ErrorSource::Downstream => Outcome::ClientGone,
            Some(e) if is_connect_failure(e) => Outcome::Failed {
                backend_at_fault: false,
            },
            Some(e) if *e.esource() == ErrorSource::Upstream => {
                Outcome::UpstreamFailed(failure_kind(e))
            }
            Some(_) => Outcome::Failed {
                backend_at_fault: true,
            },
            None => match session.response_written() {
                Some(_) if ctx.grpc_failed => Outcome::GrpcFailed,
                Some(response) => Outcome::Answered(response.status.as_u16()),
                None => Outcome::Failed {
                    backend_at_fault: false,
                },
            },
        };
        ctx.attempt
            .finish(pool, outcome, ctx.started, &table.config.health, || {
                log_fields::entry(session, noted)
            });
    }
}

/// Remembers whether `headers` (a response head or its trailers) carry a
/// `grpc-status` that the request's pool counts as an error.
fn note_grpc_status(ctx: &mut RequestCtx, headers: &pingora::http::HMap) {
    let (Some(table), Some(status)) = (&ctx.table, headers.get("grpc-status")) else {
        return;
    };
    let codes = table.pools[ctx.pool].config.upstream.grpc_errors;
    if codes.contains_status(status.as_bytes()) {
        ctx.grpc_failed = true;
    }
}

/// Appends the client address to `X-Forwarded-For`, keeping what an earlier
/// proxy put there. The common case (no prior header) formats on the stack.
fn append_forwarded_for(request: &mut RequestHeader, ip: IpAddr) -> Result<()> {
    use std::io::Write;
    const NAME: &str = "x-forwarded-for";
    let value = match request.headers.get(NAME) {
        Some(prior) => {
            let mut joined = prior.as_bytes().to_vec();
            let _ = write!(joined, ", {ip}");
            http::HeaderValue::from_bytes(&joined)
        }
        None => {
            let mut buf = [0u8; 64];
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            let len = cursor.position() as usize;
            http::HeaderValue::from_bytes(&buf[..len])
        }
    }
    .or_err(ErrorType::InternalError, "formatting x-forwarded-for")?;
    request.insert_header(NAME, value)
}

/// Sends one of switchyard's own answers with the headers and body the
/// fast path gives it ([`Answer::write_h1`]); pingora adds `date` and
/// `connection`. Returns the status, for `FailToProxy`.
async fn send_answer(session: &mut Session, answer: Answer<'_>) -> u16 {
    let status = answer.status();
    let mut response = match ResponseHeader::build(status, Some(4)) {
        Ok(response) => response,
        Err(e) => {
            log::debug!("could not build the {status} answer: {e}");
            return status;
        }
    };
    let body = answer.body().map(Bytes::from).unwrap_or_default();
    let length = body.len().to_string();
    let headers = [
        ("content-type", (!body.is_empty()).then_some("text/plain")),
        ("content-length", Some(length.as_str())),
        ("cache-control", Some("private, no-store")),
    ];
    for (name, value) in headers {
        if let Some(value) = value {
            if let Err(e) = response.insert_header(name, value) {
                log::debug!("could not build the {status} answer: {e}");
            }
        }
    }
    if let Err(e) = session.write_error_response(response, body).await {
        log::debug!("could not send {status} to client: {e}");
    }
    status
}
