//! Sending the response down: the origin's response head (interim 1xx
//! heads passed on, a dead reused connection detected before any byte) and
//! its body, framed by length, chunks or the connection's end.

use std::io;

use tokio::net::TcpStream;

use super::client::Client;
use super::connection::{Connection, Failure, Retry};
use super::head::{self, Framing, Response, ResponseContext};
use super::io::{clamp, read_failure, read_within, Side};
use super::scratch::Scratch;
use crate::config::ServerConfig;
use crate::dataplane::framing::ChunkedScanner;
use crate::stats::FailureKind;

/// A final response head, parsed (and rewritten for the client into
/// `scratch.out`); `scratch.upstream[..filled]` holds what was read.
pub(super) struct Head {
    pub response: Response,
    pub filled: usize,
}

impl<C: Client> Connection<C> {
    /// Reads the final response head. Interim (1xx) heads are passed on.
    /// A reused connection that closes before any response byte is a
    /// [`Retry::Resend`] when `may_resend`.
    pub(super) async fn response_head(
        &mut self,
        scratch: &mut Scratch,
        upstream: &mut TcpStream,
        mut filled: usize,
        context: &ResponseContext<'_>,
        server: &ServerConfig,
        mut may_resend: bool,
    ) -> Result<Head, Retry> {
        let upstream_failed = |kind| {
            Retry::Fail(Failure::Upstream {
                kind,
                answered: false,
            })
        };
        loop {
            match head::parse_response(&scratch.upstream[..filled], context, &mut scratch.out) {
                Err(_) => return Err(upstream_failed(FailureKind::Other)),
                Ok(Some(response)) if response.status < 200 => {
                    // 1xx: pass it on, then read the final response.
                    self.write_client(&scratch.out, server.write_timeout)
                        .await
                        .map_err(|_| Retry::Fail(Failure::Client))?;
                    scratch.upstream.copy_within(response.head_len..filled, 0);
                    filled -= response.head_len;
                    may_resend = false;
                }
                Ok(Some(response)) => return Ok(Head { response, filled }),
                Ok(None) if filled == scratch.upstream.len() => {
                    return Err(upstream_failed(FailureKind::Other))
                }
                Ok(None) => {
                    let read = read_within(
                        &mut self.deadline,
                        upstream,
                        &mut scratch.upstream[filled..],
                        server.read_timeout,
                    )
                    .await;
                    let closed_unanswered = filled == 0
                        && match &read {
                            Ok(read) => *read == 0,
                            Err(error) => error.kind() != io::ErrorKind::TimedOut,
                        };
                    if closed_unanswered && may_resend {
                        return Err(Retry::Resend);
                    }
                    match read {
                        Ok(0) => return Err(upstream_failed(FailureKind::Reset)),
                        Err(error) => return Err(upstream_failed(read_failure(&error))),
                        Ok(read) => filled += read,
                    }
                }
            }
        }
    }

    /// Sends the response head (in `scratch.out`) and its body to the
    /// client. `scratch.upstream[head_len..filled]` is the body's start.
    /// `Ok(true)` if the upstream connection ended cleanly after the message.
    pub(super) async fn send_response_body(
        &mut self,
        scratch: &mut Scratch,
        upstream: &mut TcpStream,
        head_len: usize,
        filled: usize,
        framing: Framing,
        server: &ServerConfig,
    ) -> Result<bool, Side> {
        let start = &scratch.upstream[head_len..filled];
        // What of the bytes received belongs to this message.
        let (mut left, mut scanner, first) = match framing {
            Framing::Empty => (0, None, 0),
            Framing::Length(len) => (len, None, clamp(len).min(start.len())),
            Framing::Chunked => {
                let mut scanner = ChunkedScanner::default();
                match scanner.feed(start) {
                    Ok(Some(end)) => (0, None, end),
                    Ok(None) => (u64::MAX, Some(scanner), start.len()),
                    // Nothing went to the client yet: a 502, not a head
                    // followed by a cut.
                    Err(_) => return Err(Side::Unframed(FailureKind::Other)),
                }
            }
            Framing::UntilClose => (u64::MAX, None, start.len()),
        };
        // Bytes past the message: the origin broke the framing; don't reuse.
        let mut clean = head_len + first == filled;
        if let Framing::Length(_) = framing {
            left -= first as u64;
        }
        scratch.out.extend_from_slice(&start[..first]);
        self.write_client(&scratch.out, server.write_timeout)
            .await
            .map_err(|_| Side::Client)?;
        scratch.log.body_bytes += first as u64;

        while left > 0 {
            let want = clamp(left).min(scratch.upstream.len());
            let read = read_within(
                &mut self.deadline,
                upstream,
                &mut scratch.upstream[..want],
                server.read_timeout,
            )
            .await
            .map_err(|e| Side::Upstream(read_failure(&e)))?;
            if read == 0 {
                if framing == Framing::UntilClose {
                    return Ok(false);
                }
                return Err(Side::Upstream(FailureKind::Reset));
            }
            let mut send = read;
            match (&mut scanner, framing) {
                (Some(scanner), _) => {
                    if let Some(end) = scanner
                        .feed(&scratch.upstream[..read])
                        .map_err(|_| Side::Upstream(FailureKind::Other))?
                    {
                        clean &= end == read;
                        send = end;
                        left = 0;
                    }
                }
                (None, Framing::Length(_)) => left -= read as u64,
                _ => {}
            }
            self.write_client(&scratch.upstream[..send], server.write_timeout)
                .await
                .map_err(|_| Side::Client)?;
            scratch.log.body_bytes += send as u64;
        }
        Ok(clean)
    }
}
