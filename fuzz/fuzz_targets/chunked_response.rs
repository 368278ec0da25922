//! An origin's response on the fast path: the response-head parser
//! (`head::parse_response`), then, for a chunked response, the chunked-body
//! scanner on what follows the head. Input: one byte of options (HEAD
//! request, client closing, a `pool_header`; and how the body is cut into
//! reads), then the origin's bytes.
//!
//! Properties: the head length is within the input; the head written for
//! the client is complete, has CRLF line endings only and no hop-by-hop
//! `Connection` line of the origin's, says `connection: close` when the
//! client's connection closes, and parses again with the same status and
//! framing; the body properties of `check_chunked`.

#![no_main]

use http::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard::dataplane::fastpath::parsers::{
    parse_response, Framing, ResponseContext, MAX_RESPONSE_HEADERS,
};

fuzz_target!(|bytes: &[u8]| {
    let Some((&options, origin)) = bytes.split_first() else {
        return;
    };
    let pool = (
        HeaderName::from_static("x-pool"),
        HeaderValue::from_static("blue"),
    );
    let context = ResponseContext {
        head_method: options & 1 != 0,
        close_client: options & 2 != 0,
        pool_header: (options & 4 != 0).then_some((&pool.0, &pool.1)),
        set_cookie: None,
    };
    let mut out = Vec::new();
    let Ok(Some(response)) = parse_response(origin, &context, &mut out) else {
        return;
    };
    assert!(response.head_len <= origin.len(), "head_len past the input");
    assert!(out.ends_with(b"\r\n\r\n"), "client head is complete");
    for (i, byte) in out.iter().enumerate() {
        if *byte == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i} in {out:?}");
        }
    }
    let lower = out.to_ascii_lowercase();
    let connection_lines = lower.windows(12).filter(|w| w == b"\nconnection:").count();
    assert_eq!(
        connection_lines,
        usize::from(response.client_close),
        "only our own `connection: close` goes to the client"
    );

    // The client head parses again — unless the lines added (`pool_header`,
    // `connection: close`) take it past the fast path's own limit of
    // response header lines, which binds only this proxy, not the client.
    let lines = out.windows(2).filter(|w| w == b"\r\n").count() - 2;
    if lines > MAX_RESPONSE_HEADERS {
        assert!(
            lines <= MAX_RESPONSE_HEADERS + 2,
            "at most two lines are added"
        );
        return;
    }
    let mut again = Vec::new();
    match parse_response(&out, &context, &mut again) {
        Ok(Some(reparsed)) => {
            assert_eq!(reparsed.head_len, out.len());
            assert_eq!(reparsed.status, response.status);
            assert_eq!(reparsed.framing, response.framing);
            assert_eq!(reparsed.client_close, response.client_close);
        }
        other => panic!(
            "the client head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    }

    if response.framing == Framing::Chunked {
        let cuts = [options / 8 % 8 + 1, options / 64 + 1, 2];
        switchyard_fuzz::check_chunked(&origin[response.head_len..], &cuts);
    }
});
