//! The request path's side of the mirror: a copy is handed over by
//! appending it to this thread's ring ([`super::queue`], single-producer,
//! of words) — relaxed atomic stores of the head and body bytes as they
//! are, no per-header work: no lock, no syscall, no allocation once the
//! thread's ring exists. The mirror service drains every ring on its own
//! schedule; a full ring refuses the copy, which is counted as dropped,
//! and the client never waits for it.
//!
//! A copy in the ring is the HTTP/1.1 request as it goes to the mirror
//! pool — the head the request's own pool got, with `x-switchyard-mirror:
//! 1` added, then the body — so a drained batch is written as it is.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pingora::http::RequestHeader;

use super::queue::Queue;
use super::route::{Dropped, MirrorRoute, MirrorStats, Skipped};

/// The header every copy carries, so the mirror pool (and its logs) can
/// tell copies from live traffic; it ends the head.
pub const MIRROR_LINE: &[u8] = b"x-switchyard-mirror: 1\r\n\r\n";

/// Each request thread's queue of copies: 2 MiB, two of the largest
/// `max_body` (1 MiB), or several thousand bodiless copies.
const RING_BYTES: usize = 2 << 20;

/// Every thread's ring; locked when a thread makes its ring and by the
/// mirror service's drain, never per request.
static RINGS: Mutex<Vec<Arc<Queue>>> = Mutex::new(Vec::new());

thread_local! {
    static RING: RefCell<Option<Arc<Queue>>> = const { RefCell::new(None) };
}

/// Queues one copy made of `parts` (head without its final CRLF, extra
/// head lines, the mirror line, body); counted dropped when the thread's
/// ring has no room.
fn push(stats: &MirrorStats, parts: &[&[u8]]) {
    let queued = RING.with(|ring| {
        let Ok(mut ring) = ring.try_borrow_mut() else {
            return false;
        };
        let ring = ring.get_or_insert_with(|| {
            let ring = Arc::new(Queue::new(RING_BYTES));
            if let Ok(mut rings) = RINGS.lock() {
                rings.push(Arc::clone(&ring));
            }
            ring
        });
        ring.push(parts)
    });
    if !queued {
        stats.count_dropped(Dropped::QueueFull);
    }
}

/// The fast path's copy: `upstream` is the request as it is sent up (its
/// head, then the body bytes that came with it); `declared` the body's
/// `Content-Length` (`None`: chunked); `complete` whether all of the body
/// is in `upstream`.
pub fn offer_h1(route: &MirrorRoute, upstream: &[u8], declared: Option<u64>, complete: bool) {
    let stats = &route.stats;
    // Without a body the head is all of it (no scan).
    let head_end = if declared == Some(0) && upstream.ends_with(b"\r\n\r\n") {
        upstream.len()
    } else {
        match find(upstream, b"\r\n\r\n") {
            Some(at) => at + 4,
            None => return,
        }
    };
    let body = &upstream[head_end..];
    let too_large =
        declared.is_some_and(|n| n > route.max_body as u64) || body.len() > route.max_body;
    if too_large {
        stats.count_skipped(Skipped::BodyTooLarge);
    } else if !complete {
        stats.count_skipped(Skipped::BodyNotBuffered);
    } else {
        push(stats, &[&upstream[..head_end - 2], MIRROR_LINE, body]);
    }
}

/// A copy on pingora's path, made from the upstream request head and
/// filled from the request body as pingora forwards it.
#[derive(Debug, Default)]
pub enum Capture {
    /// Not decided yet (the request has not been sent up).
    #[default]
    Undecided,
    /// Not copied (not chosen, or given up).
    Off,
    Capturing(Box<Pending>),
    /// Queued (or dropped): nothing more to do.
    Done,
}

#[derive(Debug)]
pub struct Pending {
    stats: Arc<MirrorStats>,
    max_body: usize,
    /// The head without `content-length`, framing and final CRLF.
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Capture {
    /// The request head goes up: on the first attempt, a copy is started
    /// if `route` (the policy's choice) is given; on a retry, pingora sends
    /// the body again from its start, so the copy's body starts again too.
    /// A request without a body is queued at once.
    pub fn head(&mut self, route: Option<&MirrorRoute>, request: &RequestHeader, no_body: bool) {
        match self {
            Capture::Undecided => {
                let Some(route) = route else {
                    *self = Capture::Off;
                    return;
                };
                let mut head = Vec::with_capacity(512);
                write_head(&mut head, request);
                *self = Capture::Capturing(Box::new(Pending {
                    stats: Arc::clone(&route.stats),
                    max_body: route.max_body,
                    head,
                    body: Vec::new(),
                }));
                if no_body {
                    self.finish();
                }
            }
            Capture::Capturing(pending) => pending.body.clear(),
            Capture::Off | Capture::Done => {}
        }
    }

    /// A piece of the request body on its way up; at its end the copy is
    /// queued. A body that grows past `max_body` is given up (skipped).
    pub fn body(&mut self, data: Option<&Bytes>, end: bool) {
        let Capture::Capturing(pending) = self else {
            return;
        };
        if let Some(data) = data {
            if pending.body.len() + data.len() > pending.max_body {
                pending.stats.count_skipped(Skipped::BodyTooLarge);
                *self = Capture::Off;
                return;
            }
            pending.body.extend_from_slice(data);
        }
        if end {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if let Capture::Capturing(pending) = std::mem::replace(self, Capture::Done) {
            let mut length = [0u8; 40];
            let line = content_length(&mut length, pending.body.len());
            push(
                &pending.stats,
                &[&pending.head, line, MIRROR_LINE, &pending.body],
            );
        }
    }
}

/// `content-length: N\r\n` in `buf`.
fn content_length(buf: &mut [u8; 40], len: usize) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "content-length: {len}\r\n");
    let end = cursor.position() as usize;
    &buf[..end]
}

/// Header fields a copy does not carry over: this hop's own, and the
/// body's framing (a copy's body is whole, so it gets a `content-length`).
const NOT_COPIED: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// An HTTP/1.1 head for `request` (pingora's, after our filters), without
/// the final CRLF: origin-form target, `host` from the authority when the
/// client spoke HTTP/2.
fn write_head(out: &mut Vec<u8>, request: &RequestHeader) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !request.headers.contains_key(http::header::HOST) {
        if let Some(authority) = request.uri.authority() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(authority.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    for (name, value) in request.headers.iter() {
        if NOT_COPIED.contains(&name.as_str()) || name.as_str() == "x-switchyard-mirror" {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The mirror service's side: every request thread's ring (locked only
/// to copy the list).
pub fn rings() -> Vec<Arc<Queue>> {
    match RINGS.lock() {
        Ok(rings) => rings.clone(),
        Err(_) => Vec::new(),
    }
}

/// Drains every ring into one batch (tests: this thread's copies come out
/// with the others').
#[cfg(test)]
fn drain_all() -> Vec<Vec<u8>> {
    let mut batch = super::queue::Batch::default();
    for ring in rings() {
        ring.drain_into(&mut batch, usize::MAX, usize::MAX);
    }
    (0..batch.len()).map(|i| batch.copy(i).to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MirrorConfig, Share};
    use std::time::Duration;

    fn route(max_body: usize) -> MirrorRoute {
        let config = MirrorConfig {
            pool: "green".into(),
            percent: Share::FULL,
            methods: vec!["GET".into(), "POST".into()],
            max_body,
        };
        MirrorRoute::new(&config, 1, Duration::from_secs(30), None)
    }

    /// Copies queued on this test's thread come out whole, in order,
    /// with the mirror header; the rings of other tests' threads may hold
    /// copies too, so only this test's marked targets are looked at.
    #[test]
    fn copies_come_out_whole_with_the_mirror_line() {
        let route = route(16);
        offer_h1(
            &route,
            b"GET /tap-a HTTP/1.1\r\nhost: x\r\n\r\n",
            Some(0),
            true,
        );
        offer_h1(
            &route,
            b"POST /tap-b HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello",
            Some(5),
            true,
        );
        offer_h1(
            &route,
            b"POST /tap-c HTTP/1.1\r\ncontent-length: 50\r\n\r\nhel",
            Some(50),
            false,
        );
        offer_h1(
            &route,
            b"POST /tap-d HTTP/1.1\r\ncontent-length: 9\r\n\r\nhel",
            Some(9),
            false,
        );
        assert_eq!(route.stats.skipped(Skipped::BodyTooLarge), 1);
        assert_eq!(route.stats.skipped(Skipped::BodyNotBuffered), 1);
        let ours: Vec<Vec<u8>> = drain_all()
            .into_iter()
            .filter(|c| c.windows(5).any(|w| w == b"/tap-"))
            .collect();
        assert_eq!(
            ours,
            [
                b"GET /tap-a HTTP/1.1\r\nhost: x\r\nx-switchyard-mirror: 1\r\n\r\n".to_vec(),
                b"POST /tap-b HTTP/1.1\r\ncontent-length: 5\r\nx-switchyard-mirror: 1\r\n\r\nhello"
                    .to_vec(),
            ]
        );
    }

    #[test]
    fn a_pingora_copy_gets_a_length_and_drops_framing() {
        let route = route(8);
        let mut request = RequestHeader::build("POST", b"/tap-p?q=1", None).unwrap();
        request
            .insert_header("transfer-encoding", "chunked")
            .unwrap();
        request.insert_header("x-id", "7").unwrap();
        let mut capture = Capture::Undecided;
        capture.head(Some(&route), &request, false);
        capture.body(Some(&Bytes::from_static(b"abc")), false);
        // A retry sends the body again from the start.
        capture.head(Some(&route), &request, false);
        capture.body(Some(&Bytes::from_static(b"abc")), false);
        capture.body(Some(&Bytes::from_static(b"de")), true);
        assert!(matches!(capture, Capture::Done));
        let mut too_long = Capture::Undecided;
        too_long.head(Some(&route), &request, false);
        too_long.body(Some(&Bytes::from_static(b"123456789")), true);
        assert!(matches!(too_long, Capture::Off));
        assert_eq!(route.stats.skipped(Skipped::BodyTooLarge), 1);
        let ours: Vec<Vec<u8>> = drain_all()
            .into_iter()
            .filter(|c| c.windows(6).any(|w| w == b"/tap-p"))
            .collect();
        assert_eq!(
            ours,
            [
                b"POST /tap-p?q=1 HTTP/1.1\r\nx-id: 7\r\ncontent-length: 5\r\nx-switchyard-mirror: 1\r\n\r\nabcde"
                    .to_vec()
            ]
        );
    }
}
