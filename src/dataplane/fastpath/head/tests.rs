use super::*;

const CONFIG: &str = "[server]\npool_header = \"x-pool\"\n\
    [pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[pools.green]\nbackends = [\"127.0.0.1:2\"]\n\
    [split]\nblue = 100\n";

fn request(bytes: &[u8]) -> (Parsed<Request>, String) {
    let table = RoutingTable::from_config_text(CONFIG);
    let mut out = Vec::new();
    let client = ClientAddr::new(Some(IpAddr::from([10, 0, 0, 7])));
    let parsed = parse_request(bytes, &table, &client, 0, &mut out);
    (parsed, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn a_plain_get_is_rewritten_for_upstream() {
    let raw = b"GET /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive\r\n\
        Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\nGET /next";
    let (parsed, out) = request(raw);
    let Parsed::Done(request) = parsed else {
        panic!("not accepted: {parsed:?}");
    };
    assert_eq!(request.head_len, raw.len() - b"GET /next".len());
    assert_eq!(request.body, Body::Length(0));
    assert!(!request.close && request.idempotent && !request.head_method);
    assert_eq!(request.pool, Some(0));
    assert_eq!(
        out,
        "GET /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nX-Multi: 1\r\nX-Multi: 2\r\n\
         x-forwarded-for: 10.0.0.7\r\n\r\n"
    );
}

#[test]
fn earlier_forwarded_for_values_come_first_in_one_line() {
    let raw = b"POST /up HTTP/1.1\r\nhost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\
        x-forwarded-for: 5.6.7.8\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc";
    let (parsed, out) = request(raw);
    let Parsed::Done(request) = parsed else {
        panic!("not accepted: {parsed:?}");
    };
    assert_eq!(request.body, Body::Length(3));
    assert!(request.close && !request.idempotent);
    assert!(
        out.ends_with("content-length: 3\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.7\r\n\r\n"),
        "{out}"
    );
}

#[test]
fn an_incomplete_head_asks_for_more() {
    assert_eq!(request(b"GET / HTTP/1.1\r\nHost: h\r\n").0, Parsed::Partial);
}

#[test]
fn what_the_fast_path_does_not_carry_goes_to_pingora() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: x-other\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\n\r\n",
    ];
    for raw in cases {
        assert_eq!(
            request(raw).0,
            Parsed::Pingora,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// What the framing rules refuse is answered on the fast path itself
/// (pingora's path applies the same rules).
#[test]
fn what_the_framing_rules_refuse_is_answered_here() {
    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            400,
        ),
        (b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET x:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
    ];
    for (raw, status) in cases {
        let (parsed, _) = request(raw);
        let Parsed::Reject(reject) = parsed else {
            panic!("{}: {parsed:?}", String::from_utf8_lossy(raw));
        };
        assert_eq!(reject.status(), *status, "{}", String::from_utf8_lossy(raw));
    }
}

/// Chunked bodies and `Expect: 100-continue` are carried; the
/// Transfer-Encoding and Expect lines go up as they came.
#[test]
fn chunked_and_expect_continue_are_carried() {
    let raw = b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\
        Expect: 100-continue\r\n\r\n";
    let (parsed, out) = request(raw);
    let Parsed::Done(request) = parsed else {
        panic!("not accepted: {parsed:?}");
    };
    assert_eq!(request.body, Body::Chunked);
    assert!(
        out.starts_with(
            "POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n"
        ),
        "{out}"
    );
}

fn response(bytes: &[u8], head_method: bool, close_client: bool) -> (Response, String) {
    let name = HeaderName::from_static("x-pool");
    let value = HeaderValue::from_static("blue");
    let context = ResponseContext {
        head_method,
        close_client,
        pool_header: Some((&name, &value)),
        set_cookie: None,
    };
    let mut out = Vec::new();
    match parse_response(bytes, &context, &mut out) {
        Ok(Some(response)) => (response, String::from_utf8_lossy(&out).into_owned()),
        other => panic!("{other:?} for {}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn response_framing_follows_rfc_9112() {
    let (r, out) = response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pool: forged\r\n\r\nhello",
        false,
        false,
    );
    assert_eq!(
        (r.status, r.framing, r.upstream_close),
        (200, Framing::Length(5), false)
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-pool: blue\r\n\r\n"
    );

    let (r, out) = response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(
        !out.to_ascii_lowercase().contains("content-length"),
        "{out}"
    );

    let (r, _) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false);
    assert_eq!(r.framing, Framing::Empty);
    let (r, _) = response(b"HTTP/1.1 304 Not Modified\r\n\r\n", false, false);
    assert_eq!(r.framing, Framing::Empty);

    let (r, out) = response(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n", false, false);
    assert_eq!(
        (r.framing, r.upstream_close, r.client_close),
        (Framing::UntilClose, true, true)
    );
    assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");

    let (r, out) = response(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
        false,
    );
    assert!(r.upstream_close && !r.client_close);
    assert!(!out.contains("onnection"), "{out}");

    let (r, out) = response(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        false,
        true,
    );
    assert_eq!(
        (r.status, r.framing, r.client_close),
        (103, Framing::Empty, false)
    );
    assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
}

/// A GET's response context with no pool header.
const PLAIN: ResponseContext<'static> = ResponseContext {
    head_method: false,
    close_client: false,
    pool_header: None,
    set_cookie: None,
};

fn assert_refused(raws: &[&[u8]]) {
    for raw in raws {
        assert_eq!(
            parse_response(raw, &PLAIN, &mut Vec::new()),
            Err(BadResponse),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn a_response_that_cannot_be_framed_safely_is_refused() {
    assert_refused(&[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
    ]);
}

#[test]
fn bare_lf_lines_are_sent_on_with_crlf() {
    let (parsed, out) = request(b"GET /x HTTP/1.1\nHost: h\nX-A: 1\r\nX-B: 2\n\n");
    assert!(matches!(parsed, Parsed::Done(_)), "{parsed:?}");
    assert_eq!(
        out,
        "GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nx-forwarded-for: 10.0.0.7\r\n\r\n"
    );
}

/// httparse takes any three digits, so `000`..`099` parse; the exchange
/// loop once passed such a head on as an interim (1xx) response.
#[test]
fn a_status_below_100_is_refused() {
    assert_refused(&[
        b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
    ]);
}

/// A `Transfer-Encoding` line with no coding in it (`Transfer-Encoding:`,
/// `Transfer-Encoding: ,`) was once framed by `Content-Length` while both
/// lines went to the client, which may read until close instead (RFC 9112
/// §6.3) and take the next response as this body. The two must agree:
/// refuse it, or frame it until close without the length.
#[test]
fn an_empty_transfer_encoding_does_not_leave_the_client_guessing() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 2\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let mut out = Vec::new();
        match parse_response(raw, &PLAIN, &mut out) {
            Err(BadResponse) => {}
            Ok(Some(r)) => {
                let out = String::from_utf8_lossy(&out).to_ascii_lowercase();
                let both = out.contains("transfer-encoding") && out.contains("content-length");
                assert!(
                    !both
                        && (r.framing != Framing::Length(2) || !out.contains("transfer-encoding")),
                    "framed {:?}, client told {out:?}",
                    r.framing
                );
            }
            Ok(None) => panic!("complete head seen as partial"),
        }
    }
}

/// Hostile input never panics the parsers: random mutations of valid
/// heads (bounded, seeded, so a failure repeats).
#[test]
fn mutated_heads_never_panic() {
    use rand::{Rng, SeedableRng};
    let table = RoutingTable::from_config_text(CONFIG);
    let client = ClientAddr::new(Some(IpAddr::from([10, 0, 0, 7])));
    let name = HeaderName::from_static("x-pool");
    let value = HeaderValue::from_static("blue");
    let context = ResponseContext {
        head_method: false,
        close_client: false,
        pool_header: Some((&name, &value)),
        set_cookie: None,
    };
    let seeds: [&[u8]; 3] = [
        b"GET /a?b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 103 Early\r\nLink: x\n\r\nHTTP/1.1 204 No\r\n\r\n",
    ];
    let alphabet = b"\r\n :,;0123456789abcdefHTP/.\t\x00\x7f\xff";
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut out = Vec::new();
    for round in 0..20_000 {
        let mut bytes = seeds[round % seeds.len()].to_vec();
        for _ in 0..rng.gen_range(1..6) {
            let at = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => bytes[at] = alphabet[rng.gen_range(0..alphabet.len())],
                1 => bytes.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
                _ => {
                    bytes.remove(at);
                }
            }
            if bytes.is_empty() {
                bytes.push(b'G');
            }
        }
        let _ = parse_request(&bytes, &table, &client, rng.gen(), &mut out);
        let _ = parse_response(&bytes, &context, &mut out);
        let mut scanner = crate::dataplane::framing::ChunkedScanner::default();
        for piece in bytes.chunks(rng.gen_range(1..8)) {
            if !matches!(scanner.feed(piece), Ok(None)) {
                break;
            }
        }
    }
}
