//! A small HTTP origin: the demo's "blue" and "green" servers, and the real
//! backend that integration tests and the load benchmark proxy to.
//!
//! It answers every request with its name (`blue\n`), `GET /health` with 200
//! (or 503 when told to be unhealthy), and `/echo` with the request line and
//! headers it received, so tests can see what the proxy forwarded. Its
//! behaviour can be changed while it runs (fail every Nth request or a
//! percentage of them, add latency, fail its health check) to play a
//! deployment going bad, from code or, once [`OriginControl::accept_commands`]
//! is on (the demo's origins), over HTTP with `POST /_demo/…` (see
//! [`DEMO_COMMANDS`]). `start_tls` serves the same
//! over TLS, HTTP/2 or HTTP/1.1 by ALPN, to stand in for a TLS-only or gRPC
//! backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Live-adjustable behaviour of an origin.
#[derive(Debug, Default)]
pub struct OriginControl {
    /// Answer 500 to every Nth request (0 = never).
    fail_every: AtomicU32,
    /// Answer 500 to this many of every 100 requests (0 = never), spread
    /// evenly: request n fails when `n·p/100` passes a whole number.
    fail_percent: AtomicU32,
    /// `POST /_demo/…` changes this control (off unless asked for).
    commands: AtomicBool,
    /// Added before every successful answer, in microseconds.
    delay_us: AtomicU64,
    /// `/health` answers 503 while set.
    unhealthy: AtomicBool,
    /// Added before every `/health` answer, in microseconds (a backend
    /// whose check is slow, as at a deploy's start).
    health_delay_us: AtomicU64,
    requests: AtomicU64,
    /// When this origin first answered 500 (tests measure detection from it).
    first_failure: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl OriginControl {
    pub fn set_fail_every(&self, n: u32) {
        self.fail_every.store(n, Ordering::Relaxed);
    }

    /// Fails `percent` (0–100) of the requests that follow.
    pub fn set_fail_percent(&self, percent: u32) {
        self.fail_percent.store(percent.min(100), Ordering::Relaxed);
    }

    pub fn fail_percent(&self) -> u32 {
        self.fail_percent.load(Ordering::Relaxed)
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    pub fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Lets `POST /_demo/…` requests change this origin (see
    /// [`DEMO_COMMANDS`]).
    pub fn accept_commands(&self) {
        self.commands.store(true, Ordering::Relaxed);
    }

    /// Back to a healthy origin: no failures, no added latency.
    pub fn heal(&self) {
        self.set_fail_every(0);
        self.set_fail_percent(0);
        self.set_delay(Duration::ZERO);
        self.set_healthy(true);
    }

    /// One line: what this origin does now.
    pub fn describe(&self) -> String {
        format!(
            "fail {}%, latency {} ms, health check {}",
            self.fail_percent(),
            self.delay().as_millis(),
            if self.healthy() { "up" } else { "down" }
        )
    }

    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }

    pub fn set_health_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.health_delay_us.store(micros, Ordering::Relaxed);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.unhealthy.store(!healthy, Ordering::Relaxed);
    }

    pub fn first_failure(&self) -> Option<std::time::Instant> {
        *self.first_failure.lock()
    }

    /// Requests answered so far, health checks excluded.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A running origin; stopping it (or dropping it) closes the listener and
/// every open connection, like a process that died.
pub struct Origin {
    addr: SocketAddr,
    control: Arc<OriginControl>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Origin {
    /// Binds `addr` (use port 0 for any free port) and serves until stopped.
    /// Must be called inside a tokio runtime.
    pub async fn start(addr: SocketAddr, name: &str) -> std::io::Result<Origin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(OriginControl::default());
        let (stop, stopped) = watch::channel(false);
        let name: Arc<str> = Arc::from(name);
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&control),
            name,
            stopped,
            None,
        ));
        Ok(Origin {
            addr,
            control,
            stop,
            task: Some(task),
        })
    }

    /// Like [`Origin::start`], over TLS with the given server settings:
    /// HTTP/2 when the client negotiates `h2` by ALPN, else HTTP/1.1.
    pub async fn start_tls(
        addr: SocketAddr,
        name: &str,
        tls: Arc<pingora::tls::ServerConfig>,
    ) -> std::io::Result<Origin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(OriginControl::default());
        let (stop, stopped) = watch::channel(false);
        let name: Arc<str> = Arc::from(name);
        let acceptor = pingora::tls::TlsAcceptor::from(tls);
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&control),
            name,
            stopped,
            Some(acceptor),
        ));
        Ok(Origin {
            addr,
            control,
            stop,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control(&self) -> &Arc<OriginControl> {
        &self.control
    }

    /// Closes the listener and all connections, and waits until they are gone.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    control: Arc<OriginControl>,
    name: Arc<str>,
    mut stopped: watch::Receiver<bool>,
    tls: Option<pingora::tls::TlsAcceptor>,
) {
    // Connections live in the set: when this loop ends the set is dropped and
    // every connection task is aborted, closing its socket.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let control = Arc::clone(&control);
                let name = Arc::clone(&name);
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        answer(req, Arc::clone(&control), Arc::clone(&name))
                    });
                    let Some(acceptor) = tls else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        return;
                    };
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    control: Arc<OriginControl>,
    name: Arc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(&name) {
            response.headers_mut().insert("x-origin", value);
        }
        Ok(response)
    };
    if control.commands.load(Ordering::Relaxed) && req.uri().path().starts_with("/_demo") {
        return match demo_command(&req, &control) {
            Ok(()) => reply(StatusCode::OK, format!("{name}: {}\n", control.describe())),
            Err(message) => reply(
                StatusCode::BAD_REQUEST,
                format!("{message}\n{DEMO_COMMANDS}"),
            ),
        };
    }
    if req.uri().path() == "/health" {
        let delay = control.health_delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        return if control.unhealthy.load(Ordering::Relaxed) {
            reply(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n".into())
        } else {
            reply(StatusCode::OK, "ok\n".into())
        };
    }
    let n = control.requests.fetch_add(1, Ordering::Relaxed) + 1;
    // Failures answer at once; only successful answers wait for the delay,
    // so tests know exactly which latency each class has.
    let fail_every = u64::from(control.fail_every.load(Ordering::Relaxed));
    let percent = u64::from(control.fail_percent.load(Ordering::Relaxed));
    if fails_at(percent, n) || (fail_every > 0 && n.is_multiple_of(fail_every)) {
        control
            .first_failure
            .lock()
            .get_or_insert_with(std::time::Instant::now);
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name} failed\n"),
        );
    }
    let delay = control.delay_us.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_micros(delay)).await;
    }
    if req.uri().path() == "/echo" {
        let mut body = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            body.push_str(&format!(
                "{}: {}\n",
                k,
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        return reply(StatusCode::OK, body);
    }
    reply(StatusCode::OK, format!("{name}\n"))
}

/// Whether request `n` (1-based) is one of the `percent` in 100 that fail:
/// exactly `percent` of any 100 in a row, spread evenly.
fn fails_at(percent: u64, n: u64) -> bool {
    percent > 0 && n > 0 && (n * percent) / 100 != ((n - 1) * percent) / 100
}

/// The HTTP commands of an origin that accepts them, for people.
pub const DEMO_COMMANDS: &str = "\
POST /_demo/fail?percent=N    answer 500 to N % of requests (0-100)
POST /_demo/latency?ms=N      wait N ms before every successful answer (0-60000)
POST /_demo/health?up=false   fail the health check (up=true: pass it)
POST /_demo/heal              no failures, no latency, health check up
GET  /_demo                   what the origin does now";

/// Applies one `/_demo/…` request to `control`, or says why not.
fn demo_command(req: &Request<Incoming>, control: &OriginControl) -> Result<(), String> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let param = |key: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    };
    let number = |key: &str, max: u64| -> Result<u64, String> {
        let value = param(key).ok_or_else(|| format!("{path} needs ?{key}=N"))?;
        value
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{key}={value}: expected a whole number from 0 to {max}"))
    };
    if path == "/_demo" || path == "/_demo/" {
        return if req.method() == http::Method::GET {
            Ok(())
        } else {
            Err("GET /_demo shows the state; changes are POST /_demo/…".into())
        };
    }
    if req.method() != http::Method::POST {
        return Err(format!("{path}: use POST"));
    }
    match path {
        "/_demo/fail" => control.set_fail_percent(number("percent", 100)? as u32),
        "/_demo/latency" => control.set_delay(Duration::from_millis(number("ms", 60_000)?)),
        "/_demo/health" => match param("up") {
            Some("true") => control.set_healthy(true),
            Some("false") => control.set_healthy(false),
            _ => return Err("/_demo/health needs ?up=true or ?up=false".into()),
        },
        "/_demo/heal" => control.heal(),
        _ => return Err(format!("{path}: unknown command")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The percentage is exact over any 100 consecutive requests and spread
    /// out (no two failures in a row at 20 %).
    #[test]
    fn fail_percent_is_spread_evenly() {
        let fails = fails_at;
        for percent in [1, 7, 20, 50, 99, 100] {
            let count = (1..=100).filter(|n| fails(percent, *n)).count() as u64;
            assert_eq!(count, percent, "percent {percent}");
        }
        let failed: Vec<u64> = (1..=20).filter(|n| fails(20, *n)).collect();
        assert_eq!(failed, vec![5, 10, 15, 20]);
    }
}
