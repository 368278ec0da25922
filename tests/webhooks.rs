//! Webhooks to receivers like the hosted ones: HTTPS on loopback with a
//! certificate generated here, trusted through `[notify] ca_file`, an
//! authorization header that must arrive and never be logged, the JSON and
//! the Slack formats, one event per thing that happened, and an HTTPS
//! receiver whose certificate is not trusted counted as failed delivery.

mod common;

use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use pingora::tls::{ServerConfig, TlsAcceptor};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "Bearer hook-secret-5f3a9c";

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// An HTTPS receiver on 127.0.0.1 with a fresh self-signed certificate for
/// `localhost`, which is written to `dir/<tag>.pem` (to be trusted, or not).
/// Returns its port, what it received and the certificate's path.
async fn https_receiver(dir: &Path, tag: &str) -> (u16, Log, PathBuf) {
    // Each its own issuer name, so that the untrusted one is an unknown
    // issuer (not a known name with a bad signature).
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("certificate params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("webhook receiver {tag}"));
    let key_pair = rcgen::KeyPair::generate().expect("key pair");
    let cert = params
        .self_signed(&key_pair)
        .expect("self-signed certificate");
    let (cert_pem, key_pem) = (cert.pem(), key_pair.serialize_pem());
    let ca_path = dir.join(format!("{tag}.pem"));
    std::fs::write(&ca_path, &cert_pem).unwrap();
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("receiver TLS config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Log = Arc::default();
    let seen = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            let (authorization, content_type) =
                                (header("authorization"), header("content-type"));
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            seen.lock().push(Received {
                                path,
                                authorization,
                                content_type,
                                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                            });
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, received, ca_path)
}

async fn pools() -> (Origin, Origin, String) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let text = format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
         [canary]\nsteps = [{{ weight = 10, hold = \"1h\" }}, {{ weight = 100 }}]\n",
        blue.addr(),
        green.addr()
    );
    (blue, green, text)
}

/// A canary of green started, paused, resumed and aborted by the operator.
async fn canary_round(proxy: &Proxy) {
    for command in [
        "canary start green",
        "canary pause",
        "canary resume",
        "canary abort",
    ] {
        let answer = proxy.ctl(command).await;
        assert_eq!(answer["ok"], true, "{command}: {answer}");
    }
}

async fn wait_for(received: &Log, count: usize) -> Vec<Received> {
    let arrived = eventually(Duration::from_secs(10), || async {
        received.lock().len() >= count
    })
    .await;
    let all = received.lock().clone();
    assert!(arrived, "{count} webhooks expected, got {all:#?}");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhooks_carry_the_header_and_an_untrusted_certificate_fails() {
    let certs = TestDir::new("hooks-json");
    let (port, received, ca) = https_receiver(certs.path(), "trusted").await;
    let (untrusted_port, untrusted, _) = https_receiver(certs.path(), "untrusted").await;
    let (_blue, _green, pools) = pools().await;
    let proxy = Proxy::start(&format!(
        "{pools}[notify]\nwebhooks = [\"https://localhost:{port}/hook\", \"https://localhost:{untrusted_port}/hook\"]\n\
         ca_file = \"{}\"\nheaders = {{ authorization = \"{TOKEN}\" }}\n\
         timeout = \"2s\"\nretry_for = \"500ms\"\n",
        ca.display()
    ))
    .await;
    canary_round(&proxy).await;

    let events = wait_for(&received, 5).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|r| r.body["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        [
            "start",
            "canary_step",
            "canary_paused",
            "canary_resumed",
            "canary_aborted"
        ],
        "one event per thing that happened"
    );
    for r in &events {
        assert_eq!(r.path, "/hook");
        assert_eq!(r.authorization.as_deref(), Some(TOKEN), "{r:?}");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(events[2].body["reason"], "canary of green paused");
    assert_eq!(events[2].body["revision"], 3);

    // Every event to the untrusted receiver is given up on and counted.
    let failed = eventually(Duration::from_secs(15), || async {
        let body = proxy.admin_get("/metrics").await.body;
        metric(
            &body,
            "switchyard_webhook_deliveries_total{result=\"failed\"}",
        ) >= 5.0
    })
    .await;
    let body = proxy.admin_get("/metrics").await.body;
    assert!(
        failed,
        "untrusted deliveries not counted as failed:\n{body}"
    );
    assert_eq!(
        metric(&body, "switchyard_webhook_deliveries_total{result=\"ok\"}"),
        5.0,
        "{body}"
    );
    assert!(
        untrusted.lock().is_empty(),
        "no request passes a refused TLS handshake"
    );

    let log = proxy.log();
    assert!(
        log.contains("webhook https://localhost:") && log.contains("gave up"),
        "the failure is logged:\n{log}"
    );
    assert!(
        log.contains("invalid peer certificate: UnknownIssuer"),
        "with the TLS reason:\n{log}"
    );
    let status = proxy.ctl("status").await.to_string();
    for (what, text) in [("log", &log), ("status", &status)] {
        assert!(
            !text.contains("hook-secret"),
            "the header value appears in the {what}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_format_posts_each_events_one_line_as_text() {
    let certs = TestDir::new("hooks-slack");
    let (port, received, ca) = https_receiver(certs.path(), "trusted").await;
    let (_blue, _green, pools) = pools().await;
    let proxy = Proxy::start(&format!(
        "{pools}[notify]\nwebhooks = [\"https://localhost:{port}/services/T0/B0/x\"]\n\
         ca_file = \"{}\"\nheaders = {{ authorization = \"{TOKEN}\" }}\nformat = \"slack\"\n",
        ca.display()
    ))
    .await;
    canary_round(&proxy).await;

    let events = wait_for(&received, 5).await;
    let texts: Vec<&str> = events
        .iter()
        .map(|r| {
            let fields = r.body.as_object().expect("a JSON object");
            assert_eq!(fields.len(), 1, "only \"text\": {:?}", r.body);
            assert_eq!(r.authorization.as_deref(), Some(TOKEN));
            fields["text"].as_str().expect("text is a string")
        })
        .collect();
    assert!(texts[0].starts_with("start (revision 1): "), "{texts:?}");
    assert_eq!(
        &texts[1..],
        [
            "canary_step (pool green, revision 2): canary of green: step 1/2 at 10%",
            "canary_paused (pool green, revision 3): canary of green paused",
            "canary_resumed (pool green, revision 4): canary of green resumed",
            "canary_aborted (pool green, revision 5): canary of green aborted; split before it restored",
        ]
    );
    let log = proxy.log();
    assert!(!log.contains("hook-secret"), "{log}");
    assert!(
        !log.contains("/services/"),
        "webhook paths are not logged:\n{log}"
    );
}
