//! Reads and writes within a deadline, and what an I/O error means for the
//! pool's failure counts.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::deadline::Deadline;
use crate::stats::FailureKind;

/// Which side of the exchange failed while a body was moving.
pub(super) enum Side {
    Client,
    Upstream(FailureKind),
    /// The client's chunked body broke the framing rules.
    BadRequestBody,
    /// The origin's body can't be framed, and no byte of the response has
    /// gone to the client yet (so it gets a 502).
    Unframed(FailureKind),
}

pub(super) fn clamp(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

pub(super) async fn read_within<R: AsyncRead + Unpin + ?Sized>(
    deadline: &mut Deadline,
    reader: &mut R,
    buf: &mut [u8],
    limit: Duration,
) -> io::Result<usize> {
    deadline.bound(limit, reader.read(buf)).await
}

pub(super) async fn write_within<W: AsyncWrite + Unpin + ?Sized>(
    deadline: &mut Deadline,
    writer: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    deadline.bound(limit, write).await
}

pub(super) fn connect_failure(error: &io::Error) -> FailureKind {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::ConnectRefused,
        io::ErrorKind::TimedOut => FailureKind::ConnectTimeout,
        _ => FailureKind::Reset,
    }
}

pub(super) fn read_failure(error: &io::Error) -> FailureKind {
    match error.kind() {
        io::ErrorKind::TimedOut => FailureKind::ReadTimeout,
        _ => FailureKind::Reset,
    }
}

pub(super) fn write_failure(error: &io::Error) -> FailureKind {
    match error.kind() {
        io::ErrorKind::TimedOut => FailureKind::WriteTimeout,
        _ => FailureKind::Reset,
    }
}

/// Writes `head` then `body` with as few system calls as the socket allows
/// (one `writev` when it has room), within `limit`.
pub(super) async fn write_two_within<W: AsyncWrite + Unpin + ?Sized>(
    deadline: &mut Deadline,
    writer: &mut W,
    head: &[u8],
    body: &[u8],
    limit: Duration,
) -> io::Result<()> {
    // A poll function rather than a loop of awaits: it keeps no I/O slices
    // across a wait, so the connection future does not grow by them.
    let mut done = 0;
    let write = std::future::poll_fn(|cx| {
        while done < head.len() + body.len() {
            let written = if done < head.len() {
                let parts = [io::IoSlice::new(&head[done..]), io::IoSlice::new(body)];
                std::task::ready!(std::pin::Pin::new(&mut *writer).poll_write_vectored(cx, &parts))
            } else {
                std::task::ready!(
                    std::pin::Pin::new(&mut *writer).poll_write(cx, &body[done - head.len()..])
                )
            }?;
            if written == 0 {
                return std::task::Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            done += written;
        }
        std::pin::Pin::new(&mut *writer).poll_flush(cx)
    });
    deadline.bound(limit, write).await
}

/// What `reader` has for `buf` right now, without waiting: `None` if
/// nothing is there yet (or the read failed: the caller's next read, which
/// does wait, sees that again).
pub(super) async fn read_now<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut [u8],
) -> Option<usize> {
    let mut read = std::pin::pin!(reader.read(buf));
    std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
        std::task::Poll::Ready(Ok(n)) if n > 0 => std::task::Poll::Ready(Some(n)),
        std::task::Poll::Ready(_) | std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}
