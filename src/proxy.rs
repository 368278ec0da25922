//! The pingora `ProxyHttp` implementation: the request path.
//!
//! Per request: load the routing table once (the request keeps that revision
//! for its whole life, retries included), choose pool and backend, and at the
//! end record the outcome in the pool's statistics. Nothing here locks, logs
//! or allocates beyond what pingora's API itself requires (the boxed peer).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::routing::{fast_random, PoolId, RoutingTable};
use crate::shared::Shared;
use crate::stats::{now_ms, FailureKind, InFlightToken, Instant, StatusClass, REQUESTS};

/// Connect failures retried per request: once, on another backend of the
/// same pool (pingora may add its own retry of an idempotent request whose
/// reused keep-alive connection turned out dead; that one is not counted here).
pub(crate) const CONNECT_RETRIES: u8 = 1;

pub struct SwitchyardProxy {
    shared: Arc<Shared>,
}

impl SwitchyardProxy {
    pub fn new(shared: Arc<Shared>) -> Self {
        SwitchyardProxy { shared }
    }
}

/// Per-request state carried between pingora's hooks.
pub struct RequestCtx {
    started: Instant,
    /// The table this request was routed with (set on the first pick).
    table: Option<Arc<RoutingTable>>,
    pool: PoolId,
    backend: Option<usize>,
    /// Upstream picks so far (a retry never picks the previous backend again).
    attempts: u8,
    connect_retries: u8,
    /// The chosen pool had no usable backend: answer 503 naming it.
    no_backend: bool,
    /// Keeps the request counted as in flight until the context drops, so
    /// shutdown can exit as soon as the last one finishes.
    _in_flight: InFlightToken,
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip())
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
            backend: None,
            attempts: 0,
            connect_retries: 0,
            no_backend: false,
            _in_flight: REQUESTS.start(),
        }
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
                let choice = table
                    .choose_pool(
                        &session.req_header().headers,
                        client_ip(session),
                        fast_random(),
                    )
                    .ok_or_else(|| {
                        Error::explain(ErrorType::HTTPStatus(503), "no pool has a share")
                    })?;
                ctx.pool = choice.pool();
                ctx.table = Some(Arc::clone(&table));
                table
            }
        };
        let pool = &table.pools[ctx.pool];
        // A retry (after a connect failure, or pingora's retry of a dead
        // reused connection) goes to another backend when there is one.
        let exclude = if ctx.attempts > 0 { ctx.backend } else { None };
        ctx.attempts += 1;
        let pick = pool
            .pick_backend(fast_random(), exclude)
            .or_else(|| pool.pick_backend(fast_random(), None));
        match pick {
            Some(index) => {
                ctx.backend = Some(index);
                Ok(Box::new(pool.backends[index].peer.clone()))
            }
            None => {
                ctx.no_backend = true;
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
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(ip) = client_ip(session) {
            append_forwarded_for(upstream_request, ip)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(table) = &ctx.table {
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
        pool.count_failure(ctx.backend, failure_kind(&error), &table.config.health);
        // Retry once on another backend of the same pool, if there is one.
        let retry = ctx.connect_retries < CONNECT_RETRIES
            && pool.pick_backend(fast_random(), ctx.backend).is_some();
        if retry {
            ctx.connect_retries += 1;
        }
        error.set_retry(retry);
        error
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = if ctx.no_backend {
            let name = ctx
                .table
                .as_ref()
                .map(|t| t.pools[ctx.pool].name.as_str())
                .unwrap_or("?");
            let body = Bytes::from(no_backend_body(name));
            if let Err(e) = session.respond_error_with_body(503, body).await {
                log::debug!("could not send 503 to client: {e}");
            }
            503
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
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        // A request that never reached pool selection (malformed, or refused
        // before routing) belongs to no pool.
        let Some(table) = &ctx.table else {
            return;
        };
        let pool = &table.pools[ctx.pool];
        let class = match error {
            // The client went away: not the pool's fault, not its error.
            Some(e) if *e.esource() == ErrorSource::Downstream => return,
            Some(e) => {
                if *e.esource() == ErrorSource::Upstream && !is_connect_failure(e) {
                    pool.stats.record_failure(now_ms(), failure_kind(e));
                }
                StatusClass::Error
            }
            None => match session.response_written() {
                Some(response) => StatusClass::from_status(response.status.as_u16()),
                None => StatusClass::Error,
            },
        };
        // Passive health: a 5xx or an upstream failure counts against the
        // backend that answered; a connect failure was counted already.
        if let Some(backend) = ctx.backend.and_then(|i| pool.backends.get(i)) {
            match class {
                StatusClass::S5xx => backend.health.observe_failure(pool, &table.config.health),
                StatusClass::Error if error.is_some_and(|e| !is_connect_failure(e)) => {
                    backend.health.observe_failure(pool, &table.config.health)
                }
                StatusClass::Error => {}
                _ => backend.health.observe_success(),
            }
        }
        pool.record_finished(class, ctx.started);
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

/// The body of the 503 answered when the chosen pool has no usable backend
/// (both request paths).
pub(crate) fn no_backend_body(pool: &str) -> String {
    format!("switchyard: pool \"{pool}\" has no usable backend\n")
}
