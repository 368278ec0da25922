//! Strict upstream response framing for HTTP/1.1-over-TLS pools (issue 15,
//! item 2), through the real binary: switchyard does the TLS handshake
//! itself and checks the decrypted response with the same rules as for
//! plaintext peers. A malformed response over TLS is a 502 and the next
//! request gets a new TLS connection; good responses keep theirs (TLS
//! handshakes counted at the origin); a CA that does not vouch for the
//! origin still fails the request. The origin is a raw one behind a TLS
//! front ([`common::tls::TlsFront`]) that counts handshakes.

mod common;
#[path = "common/raw_origin.rs"]
mod raw_origin;
#[path = "common/wire.rs"]
mod wire;

use common::tls::{certificate, TlsFront};
use common::*;
use raw_origin::{Act, RawOrigin, Req, UNFRAMEABLE};

/// The malformed responses, by the target that asks for them: the shared
/// ones and two differing lengths.
const TWO_LENGTHS: (&str, &[u8]) = (
    "/two-lengths",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\ngood",
);

fn bad() -> impl Iterator<Item = &'static (&'static str, &'static [u8])> {
    UNFRAMEABLE.iter().chain(std::iter::once(&TWO_LENGTHS))
}

/// Answers each target; keeps every connection open (a proxy that reused
/// a poisoned one would be answered on it).
fn answer(req: &Req) -> Act {
    if let Some((_, bytes)) = bad().find(|(target, _)| *target == req.target) {
        return Act::Send(bytes.to_vec());
    }
    match req.target.as_str() {
        // The second request on a connection finds it closed.
        "/once" if req.nth == 1 => Act::Hangup,
        "/chunked" => Act::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ngood\r\n0\r\n\r\n".to_vec(),
        ),
        _ => Act::Send(raw_origin::ok(b"good")),
    }
}

/// A TLS pool `app` over `front`, verified with the CA file `ca_pem`.
async fn setup(front: &TlsFront, ca_pem: &str, options: &str) -> (Proxy, TestDir) {
    let dir = TestDir::new("strict-tls-upstream");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("write CA");
    let proxy = Proxy::start(&format!(
        "[pools.app]\nbackends = [\"{}\"]\ntls = true\nsni = \"backend.test\"\n\
         ca_file = \"{}\"\n{options}\n[split]\napp = 100\n\
         [health]\nenabled = false\neject_consecutive_failures = 0\n\
         [guard]\nenabled = false\n",
        front.addr,
        ca.display()
    ))
    .await;
    (proxy, dir)
}

async fn status_and_body(proxy: &Proxy, path: &str) -> Result<(u16, String), String> {
    get(proxy.listen, path, &[])
        .await
        .map(|r| (r.status, r.body))
}

fn last(origin: &RawOrigin, target: &str) -> Req {
    origin
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.target == target)
        .unwrap_or_else(|| panic!("the origin never saw {target}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_over_tls_are_502_and_their_connection_is_not_reused() {
    let (cert, key, _) = certificate(&["backend.test"]);
    let origin = RawOrigin::start(answer).await;
    let front = TlsFront::start(origin.addr, &cert, &key).await;
    let (proxy, _dir) = setup(&front, &cert, "").await;

    // Good responses (a length and a chunked one) share one TLS connection.
    for path in ["/good", "/chunked", "/good"] {
        assert_eq!(
            status_and_body(&proxy, path).await,
            Ok((200, "good".to_string())),
            "{path}\n{}",
            proxy.log()
        );
    }
    assert_eq!(front.handshakes(), 1, "one TLS connection, reused");
    assert_eq!(last(&origin, "/good").nth, 2);

    for (target, _) in bad() {
        let answered = status_and_body(&proxy, target).await;
        assert_eq!(
            answered.as_ref().map(|(status, _)| *status),
            Ok(502),
            "{target}: {answered:?}\n{}",
            proxy.log()
        );
        let asked = origin
            .requests()
            .iter()
            .filter(|r| r.target == *target)
            .count();
        assert_eq!(asked, 1, "{target}: a framing error is not retried");

        // The next request gets a new TLS connection, which is then kept.
        let before = front.handshakes();
        assert_eq!(
            status_and_body(&proxy, "/good").await,
            Ok((200, "good".to_string())),
            "after {target}"
        );
        assert_eq!(last(&origin, "/good").nth, 0, "after {target}: fresh");
        assert_eq!(front.handshakes(), before + 1, "after {target}");
        assert_eq!(
            status_and_body(&proxy, "/good").await,
            Ok((200, "good".to_string())),
            "after {target}"
        );
        assert_eq!(last(&origin, "/good").nth, 1, "after {target}: reused");
        assert_eq!(front.handshakes(), before + 1, "after {target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_tls_connection_is_retried() {
    let (cert, key, _) = certificate(&["backend.test"]);
    let origin = RawOrigin::start(answer).await;
    let front = TlsFront::start(origin.addr, &cert, &key).await;
    let (proxy, _dir) = setup(&front, &cert, "").await;
    for _ in 0..2 {
        assert_eq!(
            status_and_body(&proxy, "/once").await,
            Ok((200, "good".to_string())),
            "{}",
            proxy.log()
        );
    }
    let seen: Vec<usize> = origin.requests().iter().map(|r| r.nth).collect();
    assert_eq!(seen, [0, 1, 0], "reused, hung up on, retried fresh");
    assert_eq!(front.handshakes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_still_applies() {
    let (cert, key, _) = certificate(&["backend.test"]);
    let (other_ca, _, _) = certificate(&["backend.test"]);
    let origin = RawOrigin::start(answer).await;
    let front = TlsFront::start(origin.addr, &cert, &key).await;

    // A CA that did not sign the origin's certificate: no request reaches it.
    let (wrong, _dir) = setup(&front, &other_ca, "").await;
    let answered = status_and_body(&wrong, "/good").await;
    assert_eq!(
        answered.as_ref().map(|(status, _)| *status),
        Ok(502),
        "{answered:?}\n{}",
        wrong.log()
    );
    assert_eq!(front.handshakes(), 0);
    assert!(origin.requests().is_empty());

    // `verify = false` takes it, and still frames strictly.
    let (trusting, _dir2) = setup(&front, &other_ca, "verify = false").await;
    assert_eq!(
        status_and_body(&trusting, "/good").await,
        Ok((200, "good".to_string())),
        "{}",
        trusting.log()
    );
    let answered = status_and_body(&trusting, "/empty-size").await;
    assert_eq!(answered.map(|(status, _)| status), Ok(502));
}
