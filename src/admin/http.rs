//! The admin HTTP listener on `[admin].http`: `/health`, `/ready`,
//! `/status`, `/metrics`, and the dashboard (`/`, with the `/history`,
//! `/series` and, in fleet mode, `/cluster` it reads). Read-only: every change goes through the admin
//! socket. Runs as a pingora background service on its own small runtime,
//! so a slow scraper never competes with proxy workers.

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

use super::dashboard::{self, Series};
use super::handover;
use crate::clock::{Now, WallMs};
use crate::control::Controller;
use crate::protocol::answer::History;
use crate::protocol::wire::answer_line;
use crate::shared::Shared;

pub struct AdminHttp {
    shared: Arc<Shared>,
    controller: Arc<Controller>,
    series: Arc<Series>,
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
    pub fn new(controller: Arc<Controller>, listen: Listen, state_dir: &Path) -> Self {
        AdminHttp {
            shared: Arc::clone(controller.shared()),
            controller,
            series: Arc::default(),
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
        let sampler = tokio::spawn(sample(Arc::clone(&self.shared), Arc::clone(&self.series)));
        let handover = self.shared.handover_begun();
        tokio::pin!(handover);
        loop {
            tokio::select! {
                // A successor is taking over: let go of the port so it can
                // bind it (within milliseconds) and answer from then on.
                _ = &mut handover => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let doors = Doors {
                        controller: Arc::clone(&self.controller),
                        series: Arc::clone(&self.series),
                    };
                    connections.spawn(async move {
                        let service = service_fn(move |req| route(req, doors.clone()));
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
        sampler.abort();
        while connections.join_next().await.is_some() {}
    }
}

/// Samples the dashboard's series every [`dashboard::INTERVAL`].
async fn sample(shared: Arc<Shared>, series: Arc<Series>) {
    let mut tick = tokio::time::interval(dashboard::INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        series.sample(&shared.table(), WallMs::read(), now - last);
        last = now;
    }
}

/// What the routes read.
#[derive(Clone)]
struct Doors {
    controller: Arc<Controller>,
    series: Arc<Series>,
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

async fn route(req: Request<Incoming>, doors: Doors) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET\n".into(),
        ));
    }
    let shared = doors.controller.shared();
    let response = match req.uri().path() {
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            dashboard::PAGE.into(),
        ),
        "/health" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/ready" => {
            if shared.is_ready() {
                text(StatusCode::OK, PLAIN, "ready\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "not ready\n".into())
            }
        }
        "/status" => {
            let status = doors.controller.status(Now::read());
            text(StatusCode::OK, JSON, answer_line(&status))
        }
        "/history" => {
            let history = History {
                ok: true,
                history: doors.controller.history(HISTORY),
            };
            text(StatusCode::OK, JSON, answer_line(&history))
        }
        "/series" => text(StatusCode::OK, JSON, doors.series.json()),
        // The fleet's members (the dashboard's Fleet table): read from etcd,
        // so on a blocking thread, never on the admin listener's own.
        "/cluster" => {
            let controller = Arc::clone(&doors.controller);
            let answer =
                tokio::task::spawn_blocking(move || controller.cluster_answer(Now::read())).await;
            match answer {
                Ok(Ok(answer)) => text(StatusCode::OK, JSON, answer_line(&answer)),
                Ok(Err(refusal)) => text(StatusCode::NOT_FOUND, PLAIN, format!("{refusal}\n")),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PLAIN,
                    "cluster view failed\n".into(),
                ),
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(shared, doors.controller.cluster().map(|c| &**c)),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try / /health /ready /status /history /series /cluster /metrics\n".into(),
        ),
    };
    Ok(response)
}

/// Audit records `/history` shows (the dashboard's recent history).
const HISTORY: usize = 20;
