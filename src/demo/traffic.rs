//! The demo's own traffic: a steady, bounded trickle of `GET /` through the
//! proxy, so a canary step can gather its evidence without anyone running
//! a load tool; and the small HTTP/1.1 client it and the demo use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// At most this many requests in flight (one keep-alive connection each).
const MAX_WORKERS: u32 = 16;
/// A request that takes longer counts as failed (and its connection goes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers seen by the traffic, per pool.
#[derive(Debug, Default)]
struct Counts {
    blue_ok: AtomicU64,
    blue_failed: AtomicU64,
    green_ok: AtomicU64,
    green_failed: AtomicU64,
    /// No pool named in the answer (502/503 from the proxy) or no answer.
    unrouted: AtomicU64,
}

/// A snapshot of [`Counts`]; the difference of two says what happened
/// between them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub blue_ok: u64,
    pub blue_failed: u64,
    pub green_ok: u64,
    pub green_failed: u64,
    pub unrouted: u64,
}

impl Tally {
    pub fn since(self, earlier: Tally) -> Tally {
        Tally {
            blue_ok: self.blue_ok.saturating_sub(earlier.blue_ok),
            blue_failed: self.blue_failed.saturating_sub(earlier.blue_failed),
            green_ok: self.green_ok.saturating_sub(earlier.green_ok),
            green_failed: self.green_failed.saturating_sub(earlier.green_failed),
            unrouted: self.unrouted.saturating_sub(earlier.unrouted),
        }
    }

    /// `blue 45 ok · green 4 ok, 1 failed`, pools without requests left out.
    pub fn describe(self) -> String {
        let pool = |name: &str, ok: u64, failed: u64| match (ok, failed) {
            (0, 0) => None,
            (ok, 0) => Some(format!("{name} {ok} ok")),
            (ok, failed) => Some(format!("{name} {ok} ok, {failed} failed")),
        };
        let parts: Vec<String> = [
            pool("blue", self.blue_ok, self.blue_failed),
            pool("green", self.green_ok, self.green_failed),
            (self.unrouted > 0).then(|| format!("{} without a pool", self.unrouted)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "no requests".to_string()
        } else {
            parts.join(" · ")
        }
    }
}

/// The running traffic; dropping it stops every worker.
pub struct Traffic {
    counts: Arc<Counts>,
    pub rate: u32,
    _workers: JoinSet<()>,
}

impl Traffic {
    /// `rate` requests per second (1 to [`super::MAX_RATE`]) to `GET /` on
    /// `proxy`, spread over up to [`MAX_WORKERS`] keep-alive connections.
    /// Each worker sends at its share of the rate and skips the beats it
    /// misses while waiting for a slow answer, so the traffic never exceeds
    /// the rate nor the worker count in flight.
    pub fn start(proxy: SocketAddr, rate: u32) -> Traffic {
        let rate = rate.clamp(1, super::MAX_RATE);
        let workers = rate.min(MAX_WORKERS);
        let period = Duration::from_secs_f64(f64::from(workers) / f64::from(rate));
        let counts = Arc::new(Counts::default());
        let mut set = JoinSet::new();
        for i in 0..workers {
            let counts = Arc::clone(&counts);
            let offset = period.mul_f64(f64::from(i) / f64::from(workers));
            set.spawn(async move {
                tokio::time::sleep(offset).await;
                let mut beat = tokio::time::interval(period);
                beat.set_missed_tick_behavior(MissedTickBehavior::Skip);
                let mut conn = None;
                loop {
                    beat.tick().await;
                    let counter = match send(&mut conn, proxy, "GET", "/").await {
                        Ok(reply) => match (reply.pool.as_deref(), reply.status < 500) {
                            (Some("blue"), true) => &counts.blue_ok,
                            (Some("blue"), false) => &counts.blue_failed,
                            (Some("green"), true) => &counts.green_ok,
                            (Some("green"), false) => &counts.green_failed,
                            _ => &counts.unrouted,
                        },
                        Err(_) => &counts.unrouted,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Traffic {
            counts,
            rate,
            _workers: set,
        }
    }

    pub fn tally(&self) -> Tally {
        let c = &self.counts;
        Tally {
            blue_ok: c.blue_ok.load(Ordering::Relaxed),
            blue_failed: c.blue_failed.load(Ordering::Relaxed),
            green_ok: c.green_ok.load(Ordering::Relaxed),
            green_failed: c.green_failed.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
        }
    }
}

/// One answer: status, the pool that served it (`x-switchyard-pool`), body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub pool: Option<String>,
    pub body: String,
}

/// One request on a fresh connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<Reply, String> {
    let mut conn = None;
    send(&mut conn, addr, method, path).await
}

/// One request on the kept-alive connection `conn`, opened (again) when
/// needed; a failed exchange drops it.
async fn send(
    conn: &mut Option<SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<Reply, String> {
    let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(connect(addr).await?);
        }
        let Some(sender) = conn.as_mut() else {
            return Err("not connected".to_string());
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let pool = response
            .headers()
            .get("x-switchyard-pool")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            pool,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())));
    if result.is_err() {
        *conn = None;
    }
    result
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
