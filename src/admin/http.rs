//! The admin HTTP listener on `[admin].http`: `/health`, `/ready`,
//! `/status`, `/metrics`. Runs as a pingora background service on its own
//! small runtime, so a slow scraper never competes with proxy workers.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::handover;
use crate::clock::Now;
use crate::control::status::table_status;
use crate::protocol::wire::answer_line;
use crate::shared::Shared;

pub struct AdminHttp {
    shared: Arc<Shared>,
    /// Where this process offers its listener to a successor, and where a
    /// successor takes it from (`admin::handover`).
    handover: PathBuf,
    /// Where to listen: bound before the server starts (a busy port is a
    /// start-up error), or, for a successor in a binary upgrade, bound once
    /// the old process lets go of it at the hand-over.
    listener: Mutex<Option<Listen>>,
}

pub enum Listen {
    Bound(StdTcpListener),
    /// A successor in a binary upgrade: take the old process's listener.
    FromPredecessor(SocketAddr),
}

/// How long a successor waits for the old process to release the port.
const HANDOVER_BIND_FOR: Duration = Duration::from_secs(10);

impl AdminHttp {
    pub fn new(shared: Arc<Shared>, listen: Listen, state_dir: &Path) -> Self {
        AdminHttp {
            shared,
            handover: handover::socket_path(state_dir),
            listener: Mutex::new(Some(listen)),
        }
    }
}

/// The successor's listener: the old process's own, handed over; if that
/// fails (an old process of a version without it), the port itself once
/// the old process has let go of it.
async fn take_over(addr: SocketAddr, path: PathBuf) -> Option<StdTcpListener> {
    let taken = tokio::task::spawn_blocking(move || handover::take(&path, HANDOVER_BIND_FOR)).await;
    match taken {
        Ok(Ok(listener)) => {
            log::info!("admin http: took over {addr} from the old process");
            return Some(listener);
        }
        Ok(Err(e)) => {
            log::warn!("admin http: no listener from the old process ({e}); binding {addr}")
        }
        Err(e) => log::warn!("admin http: hand-over task failed ({e}); binding {addr}"),
    }
    bind_after_handover(addr).await
}

/// Binds the port once the old process closed it (bounded).
async fn bind_after_handover(addr: SocketAddr) -> Option<StdTcpListener> {
    let deadline = tokio::time::Instant::now() + HANDOVER_BIND_FOR;
    loop {
        match bind(addr) {
            Ok(listener) => return Some(listener),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                log::error!("admin.http: cannot listen on {addr} after the hand-over: {e}");
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[async_trait]
impl BackgroundService for AdminHttp {
    async fn start(&self, shutdown: ShutdownWatch) {
        let listen = self.listener.lock().take();
        let std_listener = match listen {
            Some(Listen::Bound(listener)) => listener,
            Some(Listen::FromPredecessor(addr)) => {
                match take_over(addr, self.handover.clone()).await {
                    Some(listener) => listener,
                    None => return,
                }
            }
            None => return,
        };
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                log::error!("admin http listener unusable: {e}");
                return;
            }
        };
        // Keep answering through the shutdown grace period (so `/ready` can
        // say 503 while in-flight requests drain); the runtime's teardown
        // ends this loop.
        let _ = shutdown;
        let mut connections = JoinSet::new();
        let handover = self.shared.handover_begun();
        tokio::pin!(handover);
        loop {
            tokio::select! {
                // A successor is taking over: let go of the port so it can
                // bind it (within milliseconds) and answer from then on.
                _ = &mut handover => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let shared = Arc::clone(&self.shared);
                    connections.spawn(async move {
                        let service = service_fn(move |req| route(req, Arc::clone(&shared)));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // The same listening socket goes to the successor: its backlog
        // carries over and the port is never closed.
        match listener.into_std() {
            Ok(std_listener) => {
                let path = self.handover.clone();
                let offered = tokio::task::spawn_blocking(move || {
                    handover::offer(&path, &std_listener, HANDOVER_BIND_FOR)
                })
                .await;
                match offered {
                    Ok(Ok(())) => log::info!("admin http: listener handed to the successor"),
                    Ok(Err(e)) => log::warn!("admin http: listener not handed over: {e}"),
                    Err(e) => log::warn!("admin http: hand-over task failed: {e}"),
                }
            }
            Err(e) => log::warn!("admin http: listener not handed over: {e}"),
        }
        while connections.join_next().await.is_some() {}
    }
}

/// Binds the admin HTTP address, exclusively: a second process given the
/// same address fails at start instead of sharing the port (with
/// `SO_REUSEPORT` the kernel would spread `/status` and `/metrics` between
/// two processes). `SO_REUSEADDR` only lets a restart bind past old
/// connections in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<StdTcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET\n".into(),
        ));
    }
    let response = match req.uri().path() {
        "/health" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/ready" => {
            if shared.is_ready() {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n".into())
            }
        }
        "/status" => {
            let status = table_status(&shared.table(), Now::read());
            let body = answer_line(&status);
            text(StatusCode::OK, "application/json", body)
        }
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(&shared),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /health /ready /status /metrics\n".into(),
        ),
    };
    Ok(response)
}
