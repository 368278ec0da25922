//! Upstream connections of the fast path: connect, and keep idle ones for
//! reuse.
//!
//! Idle connections are kept per worker thread, so taking and returning one
//! is a thread-local list operation: no lock, no shared cache line. A request
//! takes from the pool of the thread it runs on and returns to the pool of
//! the thread it finishes on (tokio may move it in between; that's fine).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::stats::now_ms;

struct IdleConnection {
    addr: SocketAddr,
    since_ms: u64,
    stream: TcpStream,
}

thread_local! {
    static IDLE: RefCell<VecDeque<IdleConnection>> = const { RefCell::new(VecDeque::new()) };
}

/// An idle connection to `addr` that is still open and not older than
/// `max_idle`, if this thread has one. Newest first: it is the least likely
/// to have been closed by the origin.
pub fn take_idle(addr: SocketAddr, max_idle: Duration) -> Option<TcpStream> {
    let max_idle_ms = max_idle.as_millis() as u64;
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let now = now_ms();
        while let Some(index) = idle.iter().rposition(|c| c.addr == addr) {
            let candidate = idle.remove(index)?;
            if now.saturating_sub(candidate.since_ms) <= max_idle_ms
                && still_open(&candidate.stream)
            {
                return Some(candidate.stream);
            }
        }
        None
    })
}

/// Keeps `stream` for reuse. Past `capacity` on this thread, the oldest idle
/// connection is closed.
pub fn put_idle(addr: SocketAddr, stream: TcpStream, capacity: usize) {
    if capacity == 0 {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        while idle.len() >= capacity {
            idle.pop_front();
        }
        idle.push_back(IdleConnection {
            addr,
            since_ms: now_ms(),
            stream,
        });
    });
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
