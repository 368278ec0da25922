use super::*;

fn framing(head: &[u8]) -> Result<HeadStatus, Reject> {
    parse_request_head(head)
}

/// The status a head gets: 200 for accepted.
fn status(head: &[u8]) -> u16 {
    match parse_request_head(head) {
        Ok(_) => 200,
        Err(reject) => reject.status(),
    }
}

#[test]
fn plain_heads_pass_with_their_framing() {
    let get = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(matches!(
        framing(get),
        Ok(HeadStatus::Complete { head_len, body: Body::Length(0), .. }) if head_len == get.len()
    ));
    let post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n";
    assert!(matches!(
        framing(post),
        Ok(HeadStatus::Complete {
            body: Body::Length(12),
            ..
        })
    ));
    let te = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ChunKed \r\n\r\n";
    assert!(matches!(
        framing(te),
        Ok(HeadStatus::Complete {
            body: Body::Chunked,
            ..
        })
    ));
    assert_eq!(framing(b"GET / HTTP/1.1\r\nHost:"), Ok(HeadStatus::Partial));
    assert_eq!(
        status(b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        200
    );
    assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_eq!(
        status(b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
        200
    );
    assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
}

#[test]
fn transfer_codings_other_than_chunked_are_refused() {
    for (value, expected) in [
        ("gzip, chunked", 501),
        ("cow, chunked", 501),
        ("xchunked", 501),
        ("identity", 501),
        (",chunked", 400),
        ("chunked,", 400),
        ("chunked, chunked", 400),
        ("chunked, gzip", 400),
        ("\"chunked\"", 400),
        ("chunked;q=1", 400),
        ("", 400),
    ] {
        let head = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {value}\r\n\r\n");
        assert_eq!(status(head.as_bytes()), expected, "{value:?}");
    }
    let twice = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                  Transfer-Encoding: chunked\r\n\r\n";
    assert_eq!(status(twice), 400);
    let with_length =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(status(with_length), 400);
    let on_10 = b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(status(on_10), 400);
}

#[test]
fn lengths_hosts_and_targets() {
    for head in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    ] {
        assert_eq!(status(head), 400, "{}", head.escape_ascii());
    }
}
