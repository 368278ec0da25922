//! The differential corpus: every case of `tests/http1_conformance/corpus/`
//! is replayed, byte for byte, against both request paths (the fast path,
//! and `fast_path = false`: pingora's) in front of a raw origin that records
//! exactly what reaches it. Both must give the case's outcome and forward
//! exactly its bytes (or nothing) — so both paths agree.
//!
//! When HAProxy is installed (Debian's 2.6 in CI), the same cases go
//! through it too, and a case where switchyard forwards what HAProxy
//! refuses fails, unless it is on the reviewed allow-list
//! (`tests/http1_conformance/haproxy-allow.txt`, a reason per entry).
//! Every difference in outcome is printed either way.
//!
//! Cases run one after another on one origin, so whatever it receives
//! between a case's start and its end belongs to that case.

#[path = "../common/mod.rs"]
mod common;
mod corpus;
mod haproxy;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use corpus::Case;
use wire::{RecordingOrigin, DEFAULT_RESPONSE};

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/http1_conformance")
}

fn cases() -> Vec<Case> {
    let cases = corpus::load(&conformance_dir().join("corpus"));
    assert!(cases.len() >= 50, "the corpus has {} cases", cases.len());
    cases
}

/// What one case did on one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    outcome: String,
    forwarded: Vec<u8>,
}

async fn run(target: SocketAddr, origin: &RecordingOrigin, case: &Case) -> Run {
    std::mem::take(&mut *origin.recording.received.lock());
    *origin.recording.response.lock() = case.respond.clone().unwrap_or(DEFAULT_RESPONSE.to_vec());
    let outcome = wire::outcome(target, &case.send).await;
    let forwarded = origin.take().await;
    Run { outcome, forwarded }
}

/// Switchyard on one path, to `origin`; health, ejection and the guard off
/// so every request goes where the case says.
async fn switchyard(origin: SocketAddr, fast_path: bool) -> Proxy {
    Proxy::start_with(
        &format!(
            "fast_path = {fast_path}\nconnect_timeout = \"1s\"\n\
             read_timeout = \"2s\"\nwrite_timeout = \"2s\"\n"
        ),
        &format!(
            "[pools.app]\nbackends = [\"{origin}\"]\n[split]\napp = 100\n\
             [health]\nenabled = false\neject_consecutive_failures = 0\n\
             [guard]\nenabled = false\n"
        ),
    )
    .await
}

fn shown(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "nothing".to_string(),
        Some(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_gives_its_outcome_and_bytes_on_both_paths() {
    let cases = cases();
    let origin = RecordingOrigin::start().await;
    let fast = switchyard(origin.addr, true).await;
    let pingora = switchyard(origin.addr, false).await;
    let mut failures = Vec::new();
    for case in &cases {
        for (path, proxy) in [("fast", &fast), ("pingora", &pingora)] {
            let got = run(proxy.listen, &origin, case).await;
            let expected = match (&case.forwarded_pingora, path) {
                (Some(theirs), "pingora") => theirs.clone(),
                _ => case.forwarded.clone(),
            };
            let forwarded = (!got.forwarded.is_empty()).then(|| got.forwarded.clone());
            let expect = match (&case.expect_pingora, path) {
                (Some(theirs), "pingora") => theirs,
                _ => &case.expect,
            };
            if &got.outcome != expect || forwarded != expected {
                failures.push(format!(
                    "{} ({}) on the {path} path: {}\n  outcome {:?}, expected {:?}\n  \
                     forwarded {}\n  expected  {}",
                    case.name,
                    case.source,
                    case.about,
                    got.outcome,
                    expect,
                    shown(&forwarded),
                    shown(&expected),
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Each proxy is still serving.
    *origin.recording.response.lock() = DEFAULT_RESPONSE.to_vec();
    let plain = b"GET /alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for proxy in [&fast, &pingora] {
        assert_eq!(wire::outcome(proxy.listen, plain).await, "200");
    }
}

/// Does the outcome start with a response the origin gave (not one of the
/// proxy's own refusals)?
fn relayed(outcome: &str) -> bool {
    outcome
        .split(' ')
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .is_some_and(|status| (100..400).contains(&status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchyard_forwards_nothing_haproxy_refuses() {
    let Some(binary) = haproxy::binary() else {
        common::skip("haproxy is not installed (apt-get install haproxy; .ci/run installs it)");
        return;
    };
    let cases = cases();
    let allowed = corpus::allow_list(&conformance_dir().join("haproxy-allow.txt"));
    for (name, _) in &allowed {
        assert!(
            cases.iter().any(|c| &c.name == name),
            "allow-list entry {name} names no case"
        );
    }
    let origin = RecordingOrigin::start().await;
    let reference = haproxy::Haproxy::start(&binary, origin.addr).await;
    let fast = switchyard(origin.addr, true).await;
    let pingora = switchyard(origin.addr, false).await;
    let mut violations = Vec::new();
    let mut differences = Vec::new();
    let mut still_allowed = Vec::new();
    for case in &cases {
        let theirs = run(reference.listen, &origin, case).await;
        let mut violated = false;
        for (path, proxy) in [("fast", &fast), ("pingora", &pingora)] {
            let ours = run(proxy.listen, &origin, case).await;
            // Request side: bytes reached the origin through switchyard and
            // none through HAProxy. Response side: switchyard relayed the
            // origin's answer where HAProxy refused it (502).
            let forwards_refused = !ours.forwarded.is_empty() && theirs.forwarded.is_empty();
            let relays_refused = relayed(&ours.outcome) && theirs.outcome.starts_with("502");
            if forwards_refused || relays_refused {
                violated = true;
                if !allowed.iter().any(|(name, _)| name == &case.name) {
                    violations.push(format!(
                        "{} on the {path} path: switchyard {:?} forwarding {}, haproxy {:?} \
                         forwarding {}",
                        case.name,
                        ours.outcome,
                        shown(&Some(ours.forwarded.clone()).filter(|f| !f.is_empty())),
                        theirs.outcome,
                        shown(&Some(theirs.forwarded.clone()).filter(|f| !f.is_empty())),
                    ));
                }
            }
            if ours.outcome != theirs.outcome && path == "fast" {
                differences.push(format!(
                    "  {:<32} switchyard {:<12} haproxy {}",
                    case.name, ours.outcome, theirs.outcome
                ));
            }
        }
        if violated {
            still_allowed.push(case.name.clone());
        }
    }
    eprintln!(
        "{} cases; outcomes that differ from haproxy's:\n{}",
        cases.len(),
        differences.join("\n")
    );
    let stale: Vec<_> = allowed
        .iter()
        .filter(|(name, _)| !still_allowed.contains(name))
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        violations.is_empty(),
        "switchyard forwards what haproxy refuses:\n{}",
        violations.join("\n")
    );
    assert!(
        stale.is_empty(),
        "allow-list entries that no longer differ (remove them): {stale:?}"
    );
}

#[test]
fn the_corpus_format_reads_escapes_and_keys() {
    let cases = corpus::parse(
        "inline",
        "# comment\ncase a\nabout: x\nsend: GET\\x20/ HTTP/1.1\\r\\n\nsend: \\r\\n\n\
         expect: 400\nforwarded: nothing\ncase b\nsend: x\nexpect: 200\nforwarded: a\\0b\n",
    )
    .expect("parses");
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].send, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(cases[0].forwarded, None);
    assert_eq!(cases[1].forwarded.as_deref(), Some(&b"a\0b"[..]));
    assert!(
        corpus::parse("inline", "case c\nsend: x\n").is_err(),
        "no expect"
    );
    assert!(corpus::parse("inline", "case c\nsend: \\q\nexpect: 1\n").is_err());
}
