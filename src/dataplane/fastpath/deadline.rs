//! One timer per client connection, for whatever the connection waits on.
//!
//! A connection waits on one thing at a time (the client's next request, a
//! backend's answer, a slow reader), so one timer covers every wait. Arming
//! a tokio timer costs more than the read it guards (and takes the timer
//! wheel's lock), so the timer is armed once and moved only when it would
//! fire too late: a new deadline further out just records the time, and when
//! the timer fires early the wait goes on until the recorded time.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Sleep;

use crate::stats::now_ms;

pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// When the current wait times out (stats clock, ms).
    at_ms: u64,
    /// When `sleep` fires (same clock).
    sleep_at_ms: u64,
}

impl Deadline {
    pub fn new() -> Deadline {
        let far = Duration::from_secs(24 * 3600);
        Deadline {
            sleep: Box::pin(tokio::time::sleep(far)),
            at_ms: u64::MAX,
            sleep_at_ms: now_ms() + far.as_millis() as u64,
        }
    }

    /// Runs `io` to completion, failing with `TimedOut` after `limit`. Most
    /// reads and writes complete at once (the data is there, the socket has
    /// room): those don't touch the timer at all.
    pub async fn bound<T>(
        &mut self,
        limit: Duration,
        io: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        let mut io = pin!(io);
        let first = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await;
        if let Poll::Ready(done) = first {
            return done;
        }
        self.start(limit);
        let mut expired = pin!(self.expired());
        // `io` was just polled (and its waker registered): poll it again
        // only once woken.
        let mut just_polled = true;
        std::future::poll_fn(|cx| {
            if !std::mem::take(&mut just_polled) {
                if let Poll::Ready(done) = io.as_mut().poll(cx) {
                    return Poll::Ready(done);
                }
            }
            match expired.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn start(&mut self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        self.at_ms = now_ms().saturating_add(limit_ms);
        if self.at_ms < self.sleep_at_ms {
            self.rearm(limit_ms);
        }
    }

    fn rearm(&mut self, in_ms: u64) {
        let when = tokio::time::Instant::now() + Duration::from_millis(in_ms);
        self.sleep.as_mut().reset(when);
        self.sleep_at_ms = self.at_ms;
    }

    /// Completes once `at_ms` has passed.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let now = now_ms();
            if now >= self.at_ms {
                return;
            }
            self.rearm(self.at_ms - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_times_out_after_its_own_limit_whatever_came_before() {
        let mut deadline = Deadline::new();
        let pending = std::future::pending::<io::Result<()>>;
        // A long limit first (cut short from outside), then a shorter one:
        // the timer must move in for it.
        let long = deadline.bound(Duration::from_secs(60), pending());
        assert!(tokio::time::timeout(Duration::from_millis(100), long)
            .await
            .is_err());
        let started = std::time::Instant::now();
        let short = deadline.bound(Duration::from_millis(300), pending()).await;
        assert_eq!(short.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // A later, longer wait still times out at its own limit.
        let started = std::time::Instant::now();
        let again = deadline.bound(Duration::from_millis(500), pending()).await;
        assert!(again.is_err());
        assert!(started.elapsed() >= Duration::from_millis(490));
        // Ready I/O never waits.
        let ready = deadline.bound(Duration::ZERO, async { Ok(7) }).await;
        assert_eq!(ready.ok(), Some(7));
    }
}
