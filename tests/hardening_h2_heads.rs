//! Bounded HTTP/2 request heads (issue 15, item 1's h2 part), through the
//! real binary on an h2c listener (and a TLS one, ALPN h2, for the
//! deadline), with frames written by hand:
//! - a header block (HEADERS without END_HEADERS, then CONTINUATION frames
//!   dripped slowly) is ended by `request_head_timeout`: a GOAWAY with
//!   ENHANCE_YOUR_CALM, then the connection closes; nothing reaches the
//!   origin;
//! - a slow head that completes within the deadline is served, and a busy
//!   connection's many heads are not mistaken for one slow one;
//! - a header list over `max_request_head` (announced as
//!   SETTINGS_MAX_HEADER_LIST_SIZE) is refused by the h2 crate: a 431
//!   response (HEADERS with END_STREAM) on that stream, nothing to the
//!   origin, and the connection serves its next stream.

mod common;
#[path = "common/raw_origin.rs"]
mod raw_origin;
#[path = "common/wire.rs"]
mod wire;

use std::time::Duration;

use common::tls::{certificate, client_config, tls_connect};
use common::*;
use raw_origin::{Act, RawOrigin};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(10);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// `GET /` for authority `x`, plus `extra` literal fields.
fn request_block(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    // :method GET, :scheme http, :path / (static table 2, 6, 4).
    let mut block = vec![0x82, 0x86, 0x84];
    // :authority (static name 1), literal without indexing.
    block.push(0x01);
    hpack_str(&mut block, b"x");
    for (name, value) in extra {
        block.push(0x00);
        hpack_str(&mut block, name);
        hpack_str(&mut block, value);
    }
    block
}

/// A connection with the preface and an empty SETTINGS sent.
async fn h2c(proxy: &Proxy) -> TcpStream {
    let mut tcp = tokio::time::timeout(WITHIN, TcpStream::connect(proxy.listen))
        .await
        .expect("connect in time")
        .expect("connect");
    let _ = tcp.set_nodelay(true);
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&hello).await.expect("preface");
    tcp
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// The next frame from the server; `None` at a close (or a reset).
async fn read_frame(tcp: &mut (impl AsyncRead + Unpin), until: Instant) -> Option<Frame> {
    let mut header = [0u8; 9];
    tokio::time::timeout_at(until, tcp.read_exact(&mut header))
        .await
        .expect("a frame or a close in time")
        .ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    tokio::time::timeout_at(until, tcp.read_exact(&mut payload))
        .await
        .expect("a frame's payload in time")
        .ok()?;
    Some(Frame {
        kind: header[3],
        flags: header[4],
        stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// The `:status` a response header block starts with (h2 puts it first),
/// for the encodings h2 uses: indexed, or a literal with an indexed name
/// and a plain or Huffman-coded value of digits.
fn status_of(block: &[u8]) -> Option<u16> {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let first = *block.first()?;
    if first & 0x80 != 0 {
        let index = (first & 0x7f) as usize;
        return STATIC.get(index.checked_sub(8)?).copied();
    }
    let index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&index) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = (len_byte & 0x7f) as usize;
    let value = block.get(2..2 + len)?;
    let digits = if len_byte & 0x80 == 0 {
        value.to_vec()
    } else {
        huffman_digits(value)?
    };
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Decodes a Huffman string of digits only (RFC 7541 Appendix B: '0'-'2'
/// are 5 bits 00000-00010, '3'-'9' 6 bits 011001-011111).
fn huffman_digits(bytes: &[u8]) -> Option<Vec<u8>> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let value = |from: usize, n: usize| bits[from..from + n].iter().fold(0u8, |v, b| v << 1 | b);
    let mut out = Vec::new();
    let mut at = 0;
    while bits.len() - at >= 5 {
        let five = value(at, 5);
        if five <= 2 {
            out.push(b'0' + five);
            at += 5;
        } else if bits.len() - at >= 6 && (25..=31).contains(&value(at, 6)) {
            out.push(b'0' + value(at, 6) - 22);
            at += 6;
        } else {
            break;
        }
    }
    // What is left must be padding: ones.
    bits[at..].iter().all(|b| *b == 1).then_some(out)
}

/// `server` goes into `[server]`, `tls` (`[[server.tls]]` tables) after it.
async fn start(server: &str, tls: &str) -> (Proxy, RawOrigin) {
    let origin = RawOrigin::start(|_| Act::Send(raw_origin::ok(b"ok"))).await;
    let proxy = Proxy::start_with(
        &format!("h2c = true\n{server}{tls}"),
        &format!(
            "[pools.app]\nbackends = [\"{}\"]\n[split]\napp = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nenabled = false\n",
            origin.addr
        ),
    )
    .await;
    (proxy, origin)
}

/// Reads frames until the response to `stream` ends (its status), a
/// RST_STREAM, a GOAWAY or a close. Every frame is kept for the message.
async fn outcome(
    tcp: &mut (impl AsyncRead + Unpin),
    stream: u32,
    until: Instant,
) -> (Option<u16>, Vec<Frame>) {
    let mut frames = Vec::new();
    let mut status = None;
    for _ in 0..64 {
        let Some(frame) = read_frame(tcp, until).await else {
            break;
        };
        let ours = frame.stream == stream;
        if ours && frame.kind == HEADERS {
            status = status_of(&frame.payload);
        }
        let end = (ours && frame.flags & END_STREAM != 0 && matches!(frame.kind, HEADERS | DATA))
            || (ours && frame.kind == RST_STREAM)
            || frame.kind == GOAWAY;
        frames.push(frame);
        if end {
            break;
        }
    }
    (status, frames)
}

/// Drips a header block over `io` (preface sent); asserts the GOAWAY and
/// the close by the 1 s deadline. The drip runs in a task of its own, so
/// that reading frames is never cut off mid-frame.
async fn dripped_head_is_ended(io: impl AsyncRead + AsyncWrite + Send + 'static, what: &str) {
    let (mut read, mut write) = tokio::io::split(io);
    let started = Instant::now();
    // END_STREAM but no END_HEADERS: the head goes on in CONTINUATIONs,
    // one byte of a 100-byte field value each (a valid block so far,
    // whether h2 decodes it as it comes or at its end).
    let mut block = request_block(&[]);
    block.push(0x00);
    hpack_str(&mut block, b"x-drip");
    hpack_int(&mut block, 0, 7, 100);
    write
        .write_all(&frame(HEADERS, END_STREAM, 1, &block))
        .await
        .expect("HEADERS");
    let drip = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        // Bounded: 50 ticks (10 s), or until a write fails (closed on us).
        for _ in 0..50 {
            tick.tick().await;
            if write
                .write_all(&frame(CONTINUATION, 0, 1, b"a"))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let until = started + WITHIN;
    let mut goaway = None;
    let mut closed_after = None;
    for _ in 0..64 {
        match read_frame(&mut read, until).await {
            Some(f) if f.kind == GOAWAY => goaway = Some(f),
            Some(_) => {}
            None => {
                closed_after = Some(started.elapsed());
                break;
            }
        }
    }
    drip.abort();
    let closed_after = closed_after.expect("the connection is closed by the deadline");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?} (deadline 1s)"
    );
    let goaway = goaway.expect("a GOAWAY before the close");
    let code = u32::from_be_bytes(goaway.payload[4..8].try_into().expect("8-byte GOAWAY"));
    assert_eq!(code, ENHANCE_YOUR_CALM, "{goaway:?}");
    eprintln!("dripped h2 head ({what}): GOAWAY(ENHANCE_YOUR_CALM), close after {closed_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_header_block_is_ended_by_the_deadline_h2c() {
    let (proxy, origin) = start("request_head_timeout = \"1s\"\n", "").await;
    dripped_head_is_ended(h2c(&proxy).await, "h2c").await;
    assert_eq!(
        origin.accepted(),
        0,
        "nothing of the head reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_header_block_is_ended_by_the_deadline_tls() {
    let certs = TestDir::new("h2-heads-tls");
    let (cert, key, der) = certificate(&["localhost"]);
    std::fs::write(certs.path().join("cert.pem"), cert).expect("write cert");
    std::fs::write(certs.path().join("key.pem"), key).expect("write key");
    let addr = loopback(free_port());
    let tls = format!(
        "[[server.tls]]\nlisten = \"{addr}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
        d = certs.path().display()
    );
    let (_proxy, origin) = start("request_head_timeout = \"1s\"\n", &tls).await;
    let mut stream = tls_connect(addr, "localhost", client_config(&[&der], &[b"h2"])).await;
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.expect("preface");
    dripped_head_is_ended(stream, "TLS, ALPN h2").await;
    assert_eq!(
        origin.accepted(),
        0,
        "nothing of the head reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_within_the_deadline_and_many_quick_ones_are_served() {
    let (proxy, origin) = start("request_head_timeout = \"1s\"\n", "").await;
    let mut tcp = h2c(&proxy).await;
    let until = Instant::now() + WITHIN;
    // A head in two pieces, 300 ms apart: within the deadline.
    let block = request_block(&[(b"x-slow", b"yes")]);
    tcp.write_all(&frame(HEADERS, END_STREAM, 1, &block[..2]))
        .await
        .expect("HEADERS");
    let mut pause = tokio::time::interval(Duration::from_millis(300));
    pause.tick().await;
    pause.tick().await;
    tcp.write_all(&frame(CONTINUATION, END_HEADERS, 1, &block[2..]))
        .await
        .expect("CONTINUATION");
    let (status, frames) = outcome(&mut tcp, 1, until).await;
    assert_eq!(status, Some(200), "{frames:?}");

    // Then 50 heads back to back in one write (within h2's concurrent
    // streams), each complete: a busy connection is not one slow head,
    // however its reads are cut.
    let mut burst = Vec::new();
    for n in 0..50u32 {
        let stream = 3 + 2 * n;
        burst.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &request_block(&[]),
        ));
    }
    tcp.write_all(&burst).await.expect("burst");
    let mut answered = 0;
    for _ in 0..4000 {
        let Some(frame) = read_frame(&mut tcp, until).await else {
            break;
        };
        assert_ne!(frame.kind, GOAWAY, "{frame:?}");
        if frame.flags & END_STREAM != 0 && frame.stream >= 3 {
            answered += 1;
            if answered == 50 {
                break;
            }
        }
    }
    assert_eq!(answered, 50);
    assert!(origin.requests().len() >= 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_max_request_head_is_refused() {
    let (proxy, origin) = start("max_request_head = \"32KiB\"\n", "").await;
    let mut tcp = h2c(&proxy).await;
    let until = Instant::now() + WITHIN;
    let big = vec![b'a'; 40 * 1024];
    let block = request_block(&[(b"x-big", &big)]);
    // In frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    let pieces: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    let mut bytes = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let (kind, flags) = match (i, last) {
            (0, true) => (HEADERS, END_STREAM | END_HEADERS),
            (0, false) => (HEADERS, END_STREAM),
            (_, true) => (CONTINUATION, END_HEADERS),
            (_, false) => (CONTINUATION, 0),
        };
        bytes.extend(frame(kind, flags, 1, piece));
    }
    tcp.write_all(&bytes).await.expect("the big head");
    let (status, mut frames) = outcome(&mut tcp, 1, until).await;
    // After the 431's HEADERS, h2 resets the stream: read on to see it.
    if status.is_some() && !frames.iter().any(|f| f.kind == RST_STREAM) {
        let more = tokio::time::timeout(Duration::from_secs(2), outcome(&mut tcp, 1, until)).await;
        if let Ok((_, more)) = more {
            frames.extend(more);
        }
    }
    let kinds: Vec<(u8, u8, u32)> = frames.iter().map(|f| (f.kind, f.flags, f.stream)).collect();
    eprintln!(
        "over-size h2 header list: status {status:?}, frames (kind, flags, stream) {kinds:?}"
    );
    assert_eq!(status, Some(431), "{frames:?}");
    assert_eq!(origin.accepted(), 0, "nothing reached the origin");

    // Only that stream is refused: the connection serves the next one.
    tcp.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &request_block(&[]),
    ))
    .await
    .expect("next request");
    let (status, frames) = outcome(&mut tcp, 3, Instant::now() + WITHIN).await;
    assert_eq!(status, Some(200), "{frames:?}");
}
