//! Upstream connections of the fast path: connect, and keep idle ones for
//! reuse.
//!
//! The idle connections are an [`IdlePool`] value, owned by the accept app
//! (one per proxy service), in per-thread shards: a request takes from and
//! returns to the shard of the thread it runs on (tokio may move it in
//! between; that's fine), with `try_lock`, so it never waits — when the
//! shard is busy it just connects afresh or closes the connection. The only
//! other user of a shard is the [`IdleReaper`] service, once a second, which
//! closes connections past their idle time or closed by the origin, so that
//! they don't linger when traffic stops; it stops with the server.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::net::TcpStream;

use crate::stats::now_ms;

struct IdleConnection {
    addr: SocketAddr,
    /// When it is closed unless reused first (stats clock, ms).
    expires_ms: u64,
    stream: TcpStream,
}

/// One thread's idle connections, on a cache line of its own.
#[repr(align(128))]
struct Shard(Mutex<VecDeque<IdleConnection>>);

/// More worker threads than this share shards (and may then skip the pool
/// now and then); pingora's default is one per CPU.
const SHARDS: usize = 64;

/// Which shard a thread uses: handed out once per thread, the same index
/// in every pool.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_shard_index() -> usize {
    MY_SHARD.with(|mine| {
        if mine.get() == usize::MAX {
            mine.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        mine.get()
    })
}

/// The fast path's idle upstream connections.
pub struct IdlePool {
    shards: [Shard; SHARDS],
}

impl Default for IdlePool {
    fn default() -> Self {
        IdlePool::new()
    }
}

impl IdlePool {
    pub fn new() -> IdlePool {
        IdlePool {
            shards: std::array::from_fn(|_| Shard(Mutex::new(VecDeque::new()))),
        }
    }

    fn my_shard(&self) -> &Shard {
        &self.shards[my_shard_index()]
    }

    /// An idle connection to `addr` that is still open and not past its idle
    /// time, if this thread's shard has one. Newest first: it is the least
    /// likely to have been closed by the origin.
    pub fn take_idle(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.my_shard().0.try_lock()?;
        let now = now_ms();
        while let Some(index) = idle.iter().rposition(|c| c.addr == addr) {
            let candidate = idle.remove(index)?;
            if now < candidate.expires_ms && still_open(&candidate.stream) {
                return Some(candidate.stream);
            }
        }
        None
    }

    /// Keeps `stream` for reuse for up to `max_idle`. Past `capacity` in this
    /// thread's shard, the oldest idle connection is closed.
    pub fn put_idle(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
        capacity: usize,
        max_idle: Duration,
    ) {
        if capacity == 0 {
            return;
        }
        let Some(mut idle) = self.my_shard().0.try_lock() else {
            return;
        };
        while idle.len() >= capacity {
            idle.pop_front();
        }
        idle.push_back(IdleConnection {
            addr,
            expires_ms: now_ms().saturating_add(max_idle.as_millis() as u64),
            stream,
        });
    }

    /// Closes idle connections past their time or closed by the origin.
    fn reap(&self, now: u64) {
        for shard in &self.shards {
            shard
                .0
                .lock()
                .retain(|c| now < c.expires_ms && still_open(&c.stream));
        }
    }
}

/// How often idle connections are checked when no request touches them.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Closes a pool's stale idle connections once a second, until the server
/// shuts down.
pub struct IdleReaper {
    pool: Arc<IdlePool>,
}

impl IdleReaper {
    pub fn new(pool: Arc<IdlePool>) -> IdleReaper {
        IdleReaper { pool }
    }
}

#[async_trait]
impl BackgroundService for IdleReaper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.pool.reap(now_ms()),
            }
        }
    }
}

/// An idle connection with anything to read has been closed by the origin
/// (or sent bytes nobody asked for): either way it can't carry a request.
/// tokio answers from its cached readiness, so the usual case (nothing
/// happened) costs no system call.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// A new connection to `addr` within `timeout`, with Nagle off (heads and
/// bodies are written whole).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    const MINUTE: Duration = Duration::from_secs(60);

    /// A connected pair: (our end, the origin's end).
    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let (ours, theirs) = tokio::join!(connect(addr, MINUTE), listener.accept());
        (ours.expect("connect"), theirs.expect("accept").0)
    }

    #[tokio::test]
    async fn reuse_is_newest_first_bounded_and_skips_closed_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pool = IdlePool::new();
        let (a, _origin_a) = pair(&listener).await;
        let (b, origin_b) = pair(&listener).await;
        let (a_port, b_port) = (
            a.local_addr().expect("a").port(),
            b.local_addr().expect("b").port(),
        );
        pool.put_idle(addr, a, 8, MINUTE);
        pool.put_idle(addr, b, 8, MINUTE);
        let newest = pool.take_idle(addr).expect("an idle connection");
        assert_eq!(newest.local_addr().expect("newest").port(), b_port);
        pool.put_idle(addr, newest, 8, MINUTE);

        // The origin closes b: the pool must notice and hand out a instead.
        drop(origin_b);
        let mut handed = None;
        for _ in 0..200 {
            let stream = pool.take_idle(addr).expect("a is still open");
            let port = stream.local_addr().expect("port").port();
            if port == a_port {
                handed = Some(port);
                break;
            }
            // b not seen as closed yet: let the reactor deliver the event.
            pool.put_idle(addr, stream, 8, MINUTE);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(handed, Some(a_port));
        assert!(pool.take_idle(addr).is_none(), "b was closed and dropped");

        // Capacity 1: the older connection is closed when a newer one comes.
        let (c, _origin_c) = pair(&listener).await;
        let (d, _origin_d) = pair(&listener).await;
        let d_port = d.local_addr().expect("d").port();
        pool.put_idle(addr, c, 1, MINUTE);
        pool.put_idle(addr, d, 1, MINUTE);
        let only = pool.take_idle(addr).expect("d");
        assert_eq!(only.local_addr().expect("only").port(), d_port);
        assert!(pool.take_idle(addr).is_none());

        // Past its idle time a connection is not handed out ...
        pool.put_idle(addr, only, 8, Duration::from_millis(10));
        let went_idle = now_ms();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(now_ms() > went_idle + 10);
        assert!(pool.take_idle(addr).is_none());

        // ... and the reaper closes it with no request touching the pool.
        let (e, mut origin_e) = pair(&listener).await;
        pool.put_idle(addr, e, 8, MINUTE);
        pool.reap(now_ms() + 61_000);
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), origin_e.read(&mut byte)).await;
        assert!(
            matches!(closed, Ok(Ok(0))),
            "the origin sees the close: {closed:?}"
        );
        assert!(pool.take_idle(addr).is_none());
    }
}
