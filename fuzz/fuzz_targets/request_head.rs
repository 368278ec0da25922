//! The fast path's request-head parser (`head::parse_request`) on arbitrary
//! bytes, with a routing table that has a route rule and sticky cookies so
//! that pool choice reads the headers too.
//!
//! Properties, beyond "no panic":
//! - the head length it reports is within the input, and the head alone
//!   parses to the same request (nothing after the head changes it);
//! - the upstream head it writes is a complete head with CRLF line endings
//!   only (a bare LF it accepted is never passed on) and no `Connection`
//!   line, and it parses again as the same request.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchyard::dataplane::fastpath::parsers::{parse_request, ClientAddr, Parsed, MAX_HEADERS};
use switchyard::routing::RoutingTable;

const CONFIG: &str = r#"
[pools.blue]
backends = ["127.0.0.1:9001"]
[pools.green]
backends = ["127.0.0.1:9002"]
[split]
blue = 90
green = 10
[sticky]
key = "cookie:session"
[[route]]
header = "x-canary"
equals = "true"
pool = "green"
"#;

fn table() -> &'static RoutingTable {
    static TABLE: OnceLock<RoutingTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let config = switchyard::config::parse(CONFIG, std::path::Path::new("/"))
            .expect("the fuzz target's own config is valid");
        RoutingTable::as_written(Arc::new(config))
    })
}

fuzz_target!(|bytes: &[u8]| {
    let table = table();
    let client = ClientAddr::new(Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let mut out = Vec::new();
    let Parsed::Done(request) = parse_request(bytes, table, &client, 7, &mut out) else {
        return;
    };
    assert!(request.head_len <= bytes.len(), "head_len past the input");

    let mut again = Vec::new();
    match parse_request(&bytes[..request.head_len], table, &client, 7, &mut again) {
        Parsed::Done(alone) => assert_eq!(alone, request, "the head alone"),
        other => panic!("the head alone parses as {other:?}"),
    }
    assert_eq!(again, out, "the head alone writes the same upstream head");

    assert!(out.ends_with(b"\r\n\r\n"), "upstream head is complete");
    for (i, byte) in out.iter().enumerate() {
        if *byte == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i} in {out:?}");
        }
    }
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.windows(12).any(|w| w == b"\nconnection:"),
        "a Connection line went upstream"
    );

    // What goes upstream is itself a request the fast path would carry the
    // same way (same length, method class and pool) — unless the line it
    // adds (`x-forwarded-for`) takes it past the fast path's own limit of
    // header lines, which binds only this proxy, not the origin.
    let lines = out.windows(2).filter(|w| w == b"\r\n").count() - 2;
    if lines > MAX_HEADERS {
        assert_eq!(lines, MAX_HEADERS + 1, "only x-forwarded-for is added");
        return;
    }
    let mut twice = Vec::new();
    let Parsed::Done(upstream) = parse_request(&out, table, &client, 7, &mut twice) else {
        panic!(
            "the upstream head does not parse: {:?}",
            String::from_utf8_lossy(&out)
        );
    };
    assert_eq!(upstream.head_len, out.len());
    assert_eq!(upstream.body, request.body);
    assert_eq!(upstream.idempotent, request.idempotent);
    assert_eq!(upstream.head_method, request.head_method);
    assert_eq!(upstream.pool, request.pool);
    assert!(!upstream.close, "Connection: close is not passed upstream");
});
