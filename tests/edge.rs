//! Edge duties through real sockets: TLS termination (HTTP/1.1 and HTTP/2 by
//! ALPN, SNI, certificates replaced on disk), TLS and HTTP/2 upstreams,
//! draining on SIGTERM, a binary upgrade under load, and the systemd unit.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::*;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pingora::tls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes a file the way deployment tools replace one: temp file, rename.
fn replace_file(path: &Path, contents: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, contents).expect("write temp file");
    std::fs::rename(&temp, path).expect("rename over");
}

fn peer_certificate(stream: &TlsStream) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec())
        .expect("a server certificate")
}

#[tokio::test]
async fn https_serves_http2_and_http1_by_alpn() {
    let blue = origin("blue").await;
    let certs = TestDir::new("tls");
    let (cert, key, der) = certificate(&["localhost"]);
    std::fs::write(certs.path().join("cert.pem"), cert).unwrap();
    std::fs::write(certs.path().join("key.pem"), key).unwrap();
    let tls_addr = loopback(free_port());
    let proxy = Proxy::start_with(
        &format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
            d = certs.path().display()
        ),
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
            blue.addr()
        ),
    )
    .await;

    let h2 = tls_connect(
        tls_addr,
        "localhost",
        client_config(&[&der], &[b"h2", b"http/1.1"]),
    )
    .await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(get_over(h2, "localhost", "/").await, (200, "blue\n".into()));

    let h1 = tls_connect(
        tls_addr,
        "localhost",
        client_config(&[&der], &[b"http/1.1"]),
    )
    .await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_over(h1, "localhost", "/").await, (200, "blue\n".into()));

    // The origin saw plain HTTP/1.1 from the proxy, whatever the client spoke.
    let echo = tls_connect(tls_addr, "localhost", client_config(&[&der], &[b"h2"])).await;
    let (status, body) = get_over(echo, "localhost", "/echo").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /echo HTTP/1.1"), "{body}");
    drop(proxy);
}

#[tokio::test]
async fn plain_listener_takes_h2c_when_enabled_and_http1_still() {
    let blue = origin("blue").await;
    let proxy = Proxy::start_with(
        "h2c = true",
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
            blue.addr()
        ),
    )
    .await;
    let tcp = TcpStream::connect(proxy.listen).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/", proxy.listen))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("in time")
        .expect("h2c response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"blue\n");
    let reply = get(proxy.listen, "/", &[]).await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "blue\n"));
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_replaced_files_serve_new_connections() {
    let blue = origin("blue").await;
    let certs = TestDir::new("sni");
    let d = certs.path();
    let (default_cert, default_key, default_der) = certificate(&["www.test"]);
    let (api_cert, api_key, api_der) = certificate(&["api.test"]);
    std::fs::write(d.join("www.pem"), default_cert).unwrap();
    std::fs::write(d.join("www.key"), default_key).unwrap();
    std::fs::write(d.join("api.pem"), api_cert).unwrap();
    std::fs::write(d.join("api.key"), api_key).unwrap();
    let tls_addr = loopback(free_port());
    let proxy = Proxy::start_with(
        &format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\ncert = \"{d}/www.pem\"\nkey = \"{d}/www.key\"\n\
             [[server.tls]]\nlisten = \"{tls_addr}\"\ncert = \"{d}/api.pem\"\nkey = \"{d}/api.key\"\n\
             server_names = [\"api.test\"]\n",
            d = d.display()
        ),
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
            blue.addr()
        ),
    )
    .await;
    let trust_all = |extra: &[u8]| client_config(&[&default_der, &api_der, extra], &[b"http/1.1"]);

    let api = tls_connect(tls_addr, "api.test", trust_all(&api_der)).await;
    assert_eq!(
        peer_certificate(&api),
        api_der,
        "SNI api.test gets its own certificate"
    );
    assert_eq!(get_over(api, "api.test", "/").await.0, 200);
    let other = tls_connect(tls_addr, "www.test", trust_all(&api_der)).await;
    assert_eq!(
        peer_certificate(&other),
        default_der,
        "other names get the default"
    );

    // Renew the default certificate on disk: new connections get it,
    // without a restart; the API certificate stays.
    let (new_cert, new_key, new_der) = certificate(&["www.test"]);
    replace_file(&d.join("www.key"), &new_key);
    replace_file(&d.join("www.pem"), &new_cert);
    let renewed = eventually(Duration::from_secs(15), || {
        let config = trust_all(&new_der);
        let new_der = new_der.clone();
        async move { peer_certificate(&tls_connect(tls_addr, "www.test", config).await) == new_der }
    })
    .await;
    assert!(
        renewed,
        "the replaced certificate was never served:\n{}",
        proxy.log()
    );
    let api = tls_connect(tls_addr, "api.test", trust_all(&new_der)).await;
    assert_eq!(peer_certificate(&api), api_der);
    let fresh = tls_connect(tls_addr, "www.test", trust_all(&new_der)).await;
    assert_eq!(
        get_over(fresh, "www.test", "/").await,
        (200, "blue\n".into())
    );

    // A broken replacement is refused; the last good certificate stays.
    replace_file(&d.join("www.pem"), "not a certificate\n");
    let reported = eventually(Duration::from_secs(15), || async {
        proxy.log().contains("certificate reload failed")
    })
    .await;
    assert!(reported, "{}", proxy.log());
    let still = tls_connect(tls_addr, "www.test", trust_all(&new_der)).await;
    assert_eq!(peer_certificate(&still), new_der);
}

/// `switchyard check` on a config with `body`; (exit code, stderr).
async fn check(dir: &Path, body: &str) -> (i32, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, body).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .await
        .expect("run check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_tls_files_and_upstream_options_are_config_errors() {
    let dir = TestDir::new("tls-check");
    let d = dir.path();
    let (cert, key, _) = certificate(&["localhost"]);
    let (_, other_key, _) = certificate(&["localhost"]);
    std::fs::write(d.join("cert.pem"), &cert).unwrap();
    std::fs::write(d.join("key.pem"), &key).unwrap();
    std::fs::write(d.join("other.key"), &other_key).unwrap();
    std::fs::write(d.join("garbage.pem"), "hello\n").unwrap();
    let pools = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[split]\nblue = 100\n";
    let tls = |cert: &str, key: &str| {
        format!("[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"{cert}\"\nkey = \"{key}\"\n{pools}")
    };

    let (code, _) = check(d, &tls("cert.pem", "key.pem")).await;
    assert_eq!(code, 0);
    let (code, err) = check(d, &tls("garbage.pem", "key.pem")).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("server.tls[0].cert") && err.contains("no PEM certificate"),
        "{err}"
    );
    let (code, err) = check(d, &tls("cert.pem", "other.key")).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("server.tls[0].cert") && err.contains("cannot be used"),
        "{err}"
    );
    let (code, err) = check(d, &tls("cert.pem", "cert.pem")).await;
    assert_eq!(code, 1);
    assert!(err.contains("no private key"), "{err}");

    let upstream = |options: &str| {
        format!("[pools.blue]\nbackends = [\"127.0.0.1:9443\"]\n{options}\n[split]\nblue = 100\n")
    };
    let (code, err) = check(d, &upstream("tls = true")).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("pools.blue.sni"),
        "an IP backend needs a name to verify: {err}"
    );
    let (code, _) = check(d, &upstream("tls = true\nverify = false")).await;
    assert_eq!(code, 0);
    let (code, err) = check(d, &upstream("protocol = \"auto\"")).await;
    assert_eq!(code, 1);
    assert!(err.contains("pools.blue.protocol"), "{err}");
    let (code, err) = check(
        d,
        &upstream("tls = true\nsni = \"a.test\"\nca_file = \"garbage.pem\""),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("pools.blue.ca_file"), "{err}");
}

/// A TLS origin for `name` with a certificate for `backend.test`; its CA
/// (the certificate itself) is written to `ca_path`.
async fn tls_origin(name: &str, ca_path: &Path) -> Origin {
    let (cert, key, _) = certificate(&["backend.test"]);
    std::fs::write(ca_path, &cert).unwrap();
    let chain = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("origin TLS config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Origin::start_tls(loopback(0), name, Arc::new(config))
        .await
        .expect("start TLS origin")
}

#[tokio::test]
async fn pools_reach_tls_backends_over_http2_and_http1_and_verify_them() {
    let dir = TestDir::new("upstream-tls");
    let ca = dir.path().join("ca.pem");
    let secure = tls_origin("secure", &ca).await;
    let addr = secure.addr();
    let ca = ca.display();
    let pool = |name: &str, options: &str| {
        format!(
            "[pools.{name}]\nbackends = [\"{addr}\"]\ntls = true\nca_file = \"{ca}\"\n{options}\n"
        )
    };
    let body = format!(
        "{}{}{}{}[split]\ngrpc = 100\nweb = 0\nimpostor = 0\ntrusting = 0\n\
         [[route]]\nheader = \"x-pool\"\nequals = \"web\"\npool = \"web\"\n\
         [[route]]\nheader = \"x-pool\"\nequals = \"trusting\"\npool = \"trusting\"\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
        pool("grpc", "sni = \"backend.test\"\nprotocol = \"h2\""),
        pool("web", "sni = \"backend.test\"\nprotocol = \"auto\""),
        pool("impostor", "sni = \"someone-else.test\""),
        pool("trusting", "sni = \"someone-else.test\"\nverify = false"),
    );
    let proxy = Proxy::start(&body).await;

    let reply = get(proxy.listen, "/echo", &[]).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Over HTTP/2 the origin sees the full URI (scheme and authority).
    let request_line = reply.body.lines().next().unwrap_or("");
    assert!(
        request_line.starts_with("GET ") && request_line.ends_with("/echo HTTP/2.0"),
        "h2-only pool: {}",
        reply.body
    );
    let reply = get(proxy.listen, "/echo", &[("x-pool", "web")])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let request_line = reply.body.lines().next().unwrap_or("");
    assert!(
        request_line.ends_with("/echo HTTP/2.0"),
        "ALPN chose h2: {}",
        reply.body
    );
    let reply = get(proxy.listen, "/", &[("x-pool", "trusting")])
        .await
        .unwrap();
    assert_eq!(
        reply.status, 200,
        "verify = false accepts the name mismatch"
    );

    // Health probes speak each pool's TLS and protocol: the pools whose
    // certificate checks out are up, the one with the wrong name is down.
    let state = |status: &serde_json::Value, pool: &str| {
        let pools = status["pools"].as_array().cloned().unwrap_or_default();
        let pool = pools
            .iter()
            .find(|p| p["name"] == pool)
            .cloned()
            .unwrap_or_default();
        pool["backends"][0]["health"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let status = proxy.ctl("status").await;
    assert_eq!(state(&status, "grpc"), "up", "{status}");
    assert_eq!(state(&status, "web"), "up", "{status}");
    assert_eq!(state(&status, "trusting"), "up", "{status}");
    let impostor_down = eventually(Duration::from_secs(10), || async {
        state(&proxy.ctl("status").await, "impostor") == "down"
    })
    .await;
    assert!(impostor_down, "{}", proxy.ctl("status").await);

    // And the request path verifies too, health checks or not.
    let unchecked = Proxy::start(&format!(
        "{}[split]\nimpostor = 100\n[health]\nenabled = false\n",
        pool("impostor", "sni = \"someone-else.test\"")
    ))
    .await;
    let reply = get(unchecked.listen, "/", &[]).await.unwrap();
    assert!(
        reply.status >= 500,
        "a certificate for another name must fail: {}",
        reply.status
    );
    assert!(secure.control().requests() > 0);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let blue = origin("blue").await;
    blue.control().set_delay(Duration::from_millis(1500));
    let mut proxy = Proxy::start_with(
        "grace_period = \"20s\"",
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
            blue.addr()
        ),
    )
    .await;
    let listen = proxy.listen;
    let slow: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { get(listen, "/", &[]).await }))
        .collect();
    let arrived = eventually(Duration::from_secs(10), || async {
        blue.control().requests() >= 4
    })
    .await;
    assert!(arrived, "the slow requests never reached the origin");

    let terminated = Instant::now();
    proxy.signal("TERM");
    let not_ready = eventually(Duration::from_secs(5), || async {
        get(proxy.admin, "/ready", &[])
            .await
            .is_ok_and(|r| r.status == 503)
    })
    .await;
    assert!(not_ready, "/ready must answer 503 while draining");
    // A new request is not taken any more.
    let late = tokio::time::timeout(Duration::from_millis(500), get(listen, "/", &[])).await;
    assert!(
        !matches!(late, Ok(Ok(ref r)) if r.status == 200),
        "accepted after SIGTERM"
    );

    for request in slow {
        let reply = request.await.unwrap().expect("in-flight request finished");
        assert_eq!((reply.status, reply.body.as_str()), (200, "blue\n"));
    }
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exited");
    assert_eq!(status.code(), Some(0), "{}", proxy.log());
    // It left as soon as the requests were done, not at the 20 s grace end.
    assert!(
        terminated.elapsed() < Duration::from_secs(10),
        "{:?}",
        terminated.elapsed()
    );
    assert!(proxy.log().contains("drained in"), "{}", proxy.log());
}

/// What one raw HTTP/1.1 exchange came to.
enum Exchange {
    Ok {
        body: String,
        close: bool,
    },
    /// The server closed the connection before sending a single byte.
    ClosedBeforeResponse,
    Failed(String),
}

/// GET / on a raw keep-alive connection, reading the response exactly so a
/// close before any byte is told apart from a broken response.
async fn raw_get(stream: &mut TcpStream) -> Exchange {
    let exchange = async {
        if let Err(e) = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: upgrade.test\r\n\r\n")
            .await
        {
            return if e.kind() == std::io::ErrorKind::BrokenPipe {
                Exchange::ClosedBeforeResponse
            } else {
                Exchange::Failed(format!("write: {e}"))
            };
        }
        let mut buf = Vec::with_capacity(512);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 512];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) if buf.is_empty() => return Exchange::ClosedBeforeResponse,
                Ok(0) => return Exchange::Failed("closed inside the response head".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Exchange::Failed(format!("read: {e}")),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Exchange::Failed(head.lines().next().unwrap_or("").to_string());
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 512];
            match stream.read(&mut chunk).await {
                Ok(0) => return Exchange::Failed("closed inside the body".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Exchange::Failed(format!("read body: {e}")),
            }
        }
        Exchange::Ok {
            body: String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned(),
            close: head.contains("connection: close"),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Exchange::Failed("timed out".into()))
}

/// Requests sent a second time because their idle connection was closed.
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// Keep-alive load as HTTP clients send idempotent requests: a request that
/// finds its reused connection closed before any response byte is sent once
/// more on a new connection (RFC 9110 §9.2.2); everything else that is not a
/// 200 is a failure. Returns (responses by body, failures).
async fn client_load(
    addr: SocketAddr,
    workers: usize,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
) -> (Vec<String>, Vec<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (stop, served) = (stop.clone(), served.clone());
        tasks.spawn(async move {
            let (mut bodies, mut failures) = (Vec::new(), Vec::new());
            let mut conn: Option<(TcpStream, usize)> = None;
            // Bounded: at most 200 000 requests per worker.
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut retried = false;
                loop {
                    if conn.is_none() {
                        match TcpStream::connect(addr).await {
                            Ok(s) => conn = Some((s, 0)),
                            Err(e) => {
                                failures.push(format!("connect: {e}"));
                                break;
                            }
                        }
                    }
                    let Some((stream, uses)) = conn.as_mut() else {
                        break;
                    };
                    match raw_get(stream).await {
                        Exchange::Ok { body, close } => {
                            *uses += 1;
                            bodies.push(body);
                            served.fetch_add(1, Ordering::Relaxed);
                            if close {
                                conn = None;
                            }
                            break;
                        }
                        Exchange::ClosedBeforeResponse if *uses > 0 && !retried => {
                            conn = None;
                            retried = true;
                            RETRIES.fetch_add(1, Ordering::Relaxed);
                        }
                        Exchange::ClosedBeforeResponse => {
                            failures.push("closed before any response on a new connection".into());
                            conn = None;
                            break;
                        }
                        Exchange::Failed(e) => {
                            failures.push(e);
                            conn = None;
                            break;
                        }
                    }
                }
            }
            (bodies, failures)
        });
    }
    let (mut bodies, mut failures) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (b, f) = done.expect("load worker");
        bodies.extend(b);
        failures.extend(f);
    }
    (bodies, failures)
}

#[tokio::test]
async fn binary_upgrade_under_load_drops_nothing_and_keeps_the_runtime_split() {
    let blue = origin("blue").await;
    let green = origin("green").await;
    let mut proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n\
         [split]\nblue = 100\ngreen = 0\n",
        blue.addr(),
        green.addr()
    ))
    .await;
    let answer = proxy.ctl("split blue=30 green=70").await;
    assert_eq!(answer["ok"], true, "{answer}");
    let before = proxy.ctl("status").await;
    let old_pid = proxy.pid();
    assert_eq!(before["pid"], old_pid);

    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load = tokio::spawn(client_load(proxy.listen, 8, stop.clone(), served.clone()));
    let warmed = eventually(Duration::from_secs(20), || async {
        served.load(Ordering::Relaxed) >= 300
    })
    .await;
    assert!(warmed, "load did not get going");

    // The upgrade as an operator starts it: SIGUSR2 makes the running process
    // check the config with the binary at its path, start it with `-u` and
    // hand its listeners over.
    proxy.signal("USR2");
    let new_pid = successor_pid(&proxy.socket(), old_pid).await;
    let exited = proxy.wait_exit(Duration::from_secs(30)).await;
    let at_exit = served.load(Ordering::Relaxed);
    let kept_serving = eventually(Duration::from_secs(20), || async {
        served.load(Ordering::Relaxed) >= at_exit + 500
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (bodies, failures) = load.await.unwrap();
    eprintln!(
        "upgrade: {} responses, {} failures, {} requests re-sent after an idle close",
        bodies.len(),
        failures.len(),
        RETRIES.load(Ordering::Relaxed)
    );
    let after = proxy.ctl("status").await;
    // The admin HTTP listener went over too, as a file descriptor (the
    // port is exclusive, so it is never shared with a stranger).
    let admin_pid = proxy.admin_get("/status").await;
    let log = proxy.log();
    terminate(new_pid).await;
    assert_eq!(
        admin_pid.status, 200,
        "admin http after the upgrade:\n{log}"
    );
    let admin_pid: serde_json::Value = serde_json::from_str(&admin_pid.body).unwrap();
    assert_eq!(
        admin_pid["pid"], new_pid,
        "the successor answers on admin http"
    );
    assert!(
        log.contains("admin http: listener handed to the successor")
            && log.contains("admin http: took over"),
        "the admin listener went over as a file descriptor:\n{log}"
    );

    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(0),
        "old process exit:\n{log}"
    );
    assert!(kept_serving, "the new process did not serve:\n{log}");
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\n{log}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(after["pid"], new_pid);
    assert_eq!(after["split"], before["split"], "runtime split restored");
    assert_eq!(
        after["revision"], before["revision"],
        "no change on the way"
    );
    let green_share =
        bodies.iter().filter(|b| b.as_str() == "green\n").count() as f64 / bodies.len() as f64;
    assert!(
        (0.6..0.8).contains(&green_share),
        "green share {green_share} of {}",
        bodies.len()
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        common::skip("systemd-analyze is not installed here (Debian's systemd)");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/switchyard.service"
    ))
    .expect("systemd/switchyard.service");
    for needed in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "StateDirectory=switchyard",
        "RuntimeDirectory=switchyard",
        "ExecStartPre=/usr/local/bin/switchyard check",
        "ExecReload=/usr/local/bin/switchyard ctl",
        "TimeoutStopSec=",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // verify checks that ExecStart's binary exists: point it at the one built.
    let dir = TestDir::new("systemd");
    let path = dir.path().join("switchyard.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        ),
    )
    .unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        !said.contains("switchyard.service:"),
        "warnings about the unit:\n{said}"
    );
}
