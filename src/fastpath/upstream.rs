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

/// Keeps `stream` for reuse. Connections idle for longer than `max_idle`
/// are closed on the way (oldest first: the list is in the order they went
/// idle), and past `capacity` on this thread so is the oldest one.
pub fn put_idle(addr: SocketAddr, stream: TcpStream, capacity: usize, max_idle: Duration) {
    if capacity == 0 {
        return;
    }
    let now = now_ms();
    let max_idle_ms = max_idle.as_millis() as u64;
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        while idle
            .front()
            .is_some_and(|c| idle.len() >= capacity || now.saturating_sub(c.since_ms) > max_idle_ms)
        {
            idle.pop_front();
        }
        idle.push_back(IdleConnection {
            addr,
            since_ms: now,
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

#[cfg(test)]
mod tests {
    use super::*;
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
        let (a, _origin_a) = pair(&listener).await;
        let (b, origin_b) = pair(&listener).await;
        let (a_port, b_port) = (
            a.local_addr().expect("a").port(),
            b.local_addr().expect("b").port(),
        );
        put_idle(addr, a, 8, MINUTE);
        put_idle(addr, b, 8, MINUTE);
        let newest = take_idle(addr, MINUTE).expect("an idle connection");
        assert_eq!(newest.local_addr().expect("newest").port(), b_port);
        put_idle(addr, newest, 8, MINUTE);

        // The origin closes b: the pool must notice and hand out a instead.
        drop(origin_b);
        let mut handed = None;
        for _ in 0..200 {
            let stream = take_idle(addr, MINUTE).expect("a is still open");
            let port = stream.local_addr().expect("port").port();
            if port == a_port {
                handed = Some(port);
                break;
            }
            // b not seen as closed yet: let the reactor deliver the event.
            put_idle(addr, stream, 8, MINUTE);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(handed, Some(a_port));
        assert!(
            take_idle(addr, MINUTE).is_none(),
            "b was closed and dropped"
        );

        // Capacity 1: the older connection is closed when a newer one comes.
        let (c, _origin_c) = pair(&listener).await;
        let (d, _origin_d) = pair(&listener).await;
        let d_port = d.local_addr().expect("d").port();
        put_idle(addr, c, 1, MINUTE);
        put_idle(addr, d, 1, MINUTE);
        let only = take_idle(addr, MINUTE).expect("d");
        assert_eq!(only.local_addr().expect("only").port(), d_port);
        assert!(take_idle(addr, MINUTE).is_none());

        // Past the idle limit a connection is not handed out.
        put_idle(addr, only, 8, MINUTE);
        let went_idle = now_ms();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(now_ms() > went_idle + 10);
        assert!(take_idle(addr, Duration::from_millis(10)).is_none());
    }
}
