//! The access log (SPEC §10) through the real binary and real sockets: one
//! JSON line per request with every field, on the fast path and on
//! pingora's (HTTP/1.0 handed over, h2c); `x-request-id` kept or made and
//! sent upstream; hostile target bytes; the combined format; reopening by
//! `ctl reopen-logs` and SIGUSR1 after a logrotate-style rename;
//! `errors_only` and `sample`; lines on disk within a second and at exit;
//! TLS listeners, HTTP/1.1 and HTTP/2.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::*;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchyard::origin::Origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The lines of `path` once it has at least `n` (bounded wait).
async fn lines_at_least(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The line of `lines` whose target is `target`, parsed.
fn line_for(lines: &[String], target: &str) -> Value {
    lines
        .iter()
        .map(|l| json(l))
        .find(|l| l["target"] == target)
        .unwrap_or_else(|| panic!("no line for {target}:\n{}", lines.join("\n")))
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// The `x-request-id` the origin's `/echo` says it received.
fn echoed_id(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id upstream:\n{body}"))
        .to_string()
}

/// Raw request bytes, answer read to the end (the request asks to close).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("answer in time")
}

fn config(log: &Path, extra: &str, blue: &Origin, green: &Origin) -> String {
    format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n\
         [pools.dead]\nbackends = [\"127.0.0.1:{}\"]\n\
         [split]\nblue = 100\n\
         [[route]]\nheader = \"x-canary\"\nequals = \"true\"\npool = \"green\"\n\
         [[route]]\nheader = \"x-dead\"\nequals = \"true\"\npool = \"dead\"\n\
         [health]\nenabled = false\n\
         [access_log]\npath = \"{}\"\n{extra}",
        blue.addr(),
        green.addr(),
        free_port(),
        log.display()
    )
}

#[tokio::test]
async fn every_request_gets_one_json_line_on_both_paths() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let logs = TestDir::new("alog");
    let log = logs.path().join("access.log");
    let proxy = Proxy::start(&config(&log, "", &blue, &green)).await;

    // 1. Fast path, the client's own request id kept and sent upstream.
    let kept = get(
        proxy.listen,
        "/echo?a=1",
        &[("x-request-id", "client-id-1"), ("user-agent", "t/1")],
    )
    .await
    .expect("GET");
    assert_eq!(echoed_id(&kept.body), "client-id-1");
    // 2. Fast path, no id: one is made and sent upstream.
    let made = get(proxy.listen, "/echo", &[("x-canary", "true")])
        .await
        .expect("GET");
    let made_id = echoed_id(&made.body);
    assert!(
        made_id.len() == 32 && made_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made_id}"
    );
    // 3. HTTP/1.0 takes pingora's path; it gets an id too.
    let old = raw(proxy.listen, b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let old_id = echoed_id(&old);
    // 4. A pool whose backend refuses connections: 502 with the failure.
    let dead = get(proxy.listen, "/", &[("x-dead", "true")])
        .await
        .expect("GET");
    assert_eq!(dead.status, 502);
    // 5. Hostile bytes in the target: quotes, backslash, braces (the origin
    // refuses the quote with a 400: that is logged too). Bytes outside
    // 0x21-0x7E (UTF-8, controls) are refused by the framing rules before
    // any routing (see the unit tests of the JSON escaping for those).
    let hostile = raw(
        proxy.listen,
        b"GET /q?a=\"x\"\\y{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let hostile_status: u16 = hostile[9..12].parse().expect("a status");

    let lines = lines_at_least(&log, 5).await;
    assert_eq!(
        lines.len(),
        5,
        "one line per request:\n{}",
        lines.join("\n")
    );
    let by_target = |target: &str| line_for(&lines, target);

    let first = by_target("/echo?a=1");
    for key in [
        "time",
        "client",
        "method",
        "target",
        "protocol",
        "status",
        "bytes",
        "duration_ms",
        "upstream_ms",
        "pool",
        "backend",
        "why",
        "request_id",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], kept.body.len());
    assert_eq!(first["pool"], "blue");
    assert_eq!(first["backend"], blue.addr().to_string());
    assert_eq!(first["why"], "split");
    assert_eq!(first["request_id"], "client-id-1");
    assert!(first.get("upstream_failure").is_none(), "{first}");
    let (duration, upstream) = (
        first["duration_ms"].as_f64().unwrap(),
        first["upstream_ms"].as_f64().unwrap(),
    );
    assert!(upstream > 0.0 && upstream <= duration, "{first}");
    let time = first["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );

    let routed = lines
        .iter()
        .map(|l| json(l))
        .find(|v| v["request_id"] == made_id.as_str());
    let routed = routed.expect("the made id is in the log");
    assert_eq!(
        (routed["pool"].as_str(), routed["why"].as_str()),
        (Some("green"), Some("route"))
    );

    let handed = lines
        .iter()
        .map(|l| json(l))
        .find(|v| v["protocol"] == "HTTP/1.0");
    let handed = handed.expect("the HTTP/1.0 line");
    assert_eq!(handed["request_id"], old_id.as_str());
    assert_eq!(handed["status"], 200);

    let failed = by_target("/");
    assert_eq!(failed["status"], 502);
    assert_eq!(failed["pool"], "dead");
    assert_eq!(failed["upstream_failure"], "connect_refused");
    assert_eq!(failed["upstream_ms"], Value::Null);

    assert_eq!(
        by_target("/q?a=\"x\"\\y{}")["status"],
        hostile_status,
        "the hostile target reads back byte for byte"
    );
    let metrics = proxy.admin_get("/metrics").await.body;
    assert!(
        metrics.contains("switchyard_access_log_dropped_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn h2_requests_on_pingoras_path_are_logged_with_their_id() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let logs = TestDir::new("alog-h2");
    let log = logs.path().join("access.log");
    let proxy = Proxy::start_with("h2c = true", &config(&log, "", &blue, &green)).await;
    let tcp = TcpStream::connect(proxy.listen).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/echo?h2", proxy.listen))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("in time")
        .expect("h2 response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let id = echoed_id(&String::from_utf8_lossy(&body));

    let lines = lines_at_least(&log, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = json(&lines[0]);
    assert_eq!(line["protocol"], "HTTP/2.0");
    assert_eq!(line["target"], "/echo?h2");
    assert_eq!(line["request_id"], id.as_str());
    assert_eq!(
        (line["status"].as_u64(), line["pool"].as_str()),
        (Some(200), Some("blue"))
    );
    assert_eq!(line["bytes"], body.len());
    assert!(
        line["upstream_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
}

/// A request refused before it is routed — against the framing rules, over
/// `max_request_head`, or not whole within `request_head_timeout` — gets
/// its line too (status as answered, `why` = `refused`, no pool), on the
/// fast path and on pingora's (`fast_path = false`).
#[tokio::test]
async fn refused_requests_are_logged_on_both_paths() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    for fast_path in [true, false] {
        let logs = TestDir::new("alog-refused");
        let log = logs.path().join("access.log");
        let server = format!(
            "fast_path = {fast_path}\nmax_request_head = \"4KiB\"\nrequest_head_timeout = \"1s\""
        );
        let proxy = Proxy::start_with(&server, &config(&log, "", &blue, &green)).await;

        let bad_target = raw(proxy.listen, b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(bad_target.starts_with("HTTP/1.1 400"), "{bad_target}");
        let big = format!(
            "GET /big HTTP/1.1\r\nHost: x\r\nx-fill: {}\r\n\r\n",
            "f".repeat(5000)
        );
        let too_large = raw(proxy.listen, big.as_bytes()).await;
        assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large}");
        // Never finished: the head deadline answers 408 after 1 s.
        let slow = raw(proxy.listen, b"GET /slow HTTP/1.1\r\nHost: x\r\n").await;
        assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");

        let lines = lines_at_least(&log, 3).await;
        let lines: Vec<Value> = lines.iter().map(|l| json(l)).collect();
        let status_of = |target: &str| -> Option<(u64, String, bool)> {
            lines.iter().find(|l| l["target"] == target).map(|l| {
                (
                    l["status"].as_u64().unwrap_or(0),
                    l["why"].as_str().unwrap_or("").to_string(),
                    l["pool"].is_null() || l["pool"] == "-" || l["pool"] == "",
                )
            })
        };
        let context = format!("fast_path = {fast_path}: {lines:?}");
        assert_eq!(
            status_of("/big"),
            Some((431, "refused".into(), true)),
            "{context}"
        );
        assert_eq!(
            status_of("/slow"),
            Some((408, "refused".into(), true)),
            "{context}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l["status"] == 400 && l["method"] == "GET"),
            "{context}"
        );
        assert_eq!(lines.len(), 3, "one line per request: {context}");
        let status = proxy.ctl("status").await;
        let blue_requests = status["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == "blue"))
            .and_then(|p| p["window"]["requests"].as_u64());
        assert_eq!(
            blue_requests,
            Some(0),
            "refusals are not the pool's: {context}"
        );
    }
}

/// TLS listeners log like plain ones: HTTP/1.1 (ALPN http/1.1) and HTTP/2
/// (ALPN h2) each get their line, with the request id the origin saw.
#[tokio::test]
async fn tls_requests_are_logged_on_http1_and_http2() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let logs = TestDir::new("alog-tls");
    let log = logs.path().join("access.log");
    let (cert, key, der) = certificate(&["localhost"]);
    std::fs::write(logs.path().join("cert.pem"), cert).expect("write cert");
    std::fs::write(logs.path().join("key.pem"), key).expect("write key");
    let tls_addr = loopback(free_port());
    let _proxy = Proxy::start_with(
        &format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
            d = logs.path().display()
        ),
        &config(&log, "", &blue, &green),
    )
    .await;

    let h1 = tls_connect(
        tls_addr,
        "localhost",
        client_config(&[&der], &[b"http/1.1"]),
    )
    .await;
    let (status, body) = get_over_with(
        h1,
        "localhost",
        "/echo?tls1",
        &[("x-request-id", "tls-client-1")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echoed_id(&body), "tls-client-1");
    let h2 = tls_connect(tls_addr, "localhost", client_config(&[&der], &[b"h2"])).await;
    let (status, body) =
        get_over_with(h2, "localhost", "/echo?tls2", &[("x-canary", "true")]).await;
    assert_eq!(status, 200);
    let made_id = echoed_id(&body);

    let lines = lines_at_least(&log, 2).await;
    assert_eq!(
        lines.len(),
        2,
        "one line per request:\n{}",
        lines.join("\n")
    );
    let by_target = |target: &str| line_for(&lines, target);
    let one = by_target("/echo?tls1");
    assert_eq!(one["protocol"], "HTTP/1.1", "{one}");
    assert_eq!(one["request_id"], "tls-client-1");
    assert_eq!(
        (one["status"].as_u64(), one["pool"].as_str()),
        (Some(200), Some("blue"))
    );
    assert_eq!(one["backend"], blue.addr().to_string());
    let two = by_target("/echo?tls2");
    assert_eq!(two["protocol"], "HTTP/2.0", "{two}");
    assert_eq!(two["request_id"], made_id.as_str());
    assert_eq!(
        (two["status"].as_u64(), two["pool"].as_str()),
        (Some(200), Some("green"))
    );
    assert_eq!(two["method"], "GET");
    assert_eq!(two["client"], "127.0.0.1", "{two}");
}

#[tokio::test]
async fn combined_lines_and_reopening_after_a_rename_by_ctl_and_by_sigusr1() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let logs = TestDir::new("alog-rotate");
    let log = logs.path().join("access.log");
    let proxy = Proxy::start(&config(&log, "format = \"combined\"\n", &blue, &green)).await;

    let ok = get(
        proxy.listen,
        "/one",
        &[("user-agent", "agent \"x\""), ("referer", "http://r/")],
    )
    .await
    .expect("GET");
    let lines = lines_at_least(&log, 1).await;
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(
        line.starts_with("127.0.0.1 - - [") && line.contains("] \"GET /one HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            " {} \"http://r/\" \"agent \\x22x\\x22\" pool=blue backend={} duration_ms=",
            ok.body.len(),
            blue.addr()
        )),
        "{line}"
    );
    assert!(line.contains(" why=split request_id="), "{line}");

    // logrotate's default: rename, then ask for a reopen.
    std::fs::rename(&log, logs.path().join("access.log.1")).expect("rename");
    let answer = proxy.ctl("reopen-logs").await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["reopened"], log.display().to_string());
    get(proxy.listen, "/two", &[]).await.expect("GET");
    let fresh = lines_at_least(&log, 1).await;
    assert!(
        fresh.len() == 1 && fresh[0].contains("GET /two "),
        "{fresh:?}"
    );

    std::fs::rename(&log, logs.path().join("access.log.2")).expect("rename");
    proxy.signal("USR1");
    let reopened = eventually(Duration::from_secs(10), || async {
        // Lines may land in the renamed file until the signal is handled.
        let _ = get(proxy.listen, "/three", &[]).await;
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("GET /three "))
    })
    .await;
    assert!(reopened, "SIGUSR1 reopened the file:\n{}", proxy.log());
    let old = std::fs::read_to_string(logs.path().join("access.log.1")).unwrap();
    assert_eq!(
        old.lines().count(),
        1,
        "the rotated file keeps its line: {old}"
    );
    assert!(std::fs::read_to_string(logs.path().join("access.log.2"))
        .unwrap()
        .contains("GET /two "));
}

#[tokio::test]
async fn errors_only_and_sample_keep_only_what_they_say() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let logs = TestDir::new("alog-filter");
    let errors_log = logs.path().join("errors.log");
    let errors = Proxy::start(&config(&errors_log, "errors_only = true\n", &blue, &green)).await;
    let none_log = logs.path().join("none.log");
    let none = Proxy::start(&config(&none_log, "sample = 0\n", &blue, &green)).await;
    for proxy in [&errors, &none] {
        for _ in 0..5 {
            get(proxy.listen, "/", &[]).await.expect("GET");
        }
        get(proxy.listen, "/broken", &[("x-dead", "true")])
            .await
            .expect("GET");
    }
    // A final marker request that is an error, so the wait has an end.
    get(errors.listen, "/last", &[("x-dead", "true")])
        .await
        .expect("GET");
    let lines = lines_at_least(&errors_log, 2).await;
    let targets: Vec<String> = lines
        .iter()
        .map(|l| json(l)["target"].to_string())
        .collect();
    assert_eq!(targets, ["\"/broken\"", "\"/last\""], "only the errors");
    // The writer drains every 20 ms at most when idle: well past that,
    // the sampled-out log is still empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::read_to_string(&none_log).unwrap_or_default(), "");
}

#[tokio::test]
async fn lines_reach_the_file_within_a_second_and_none_is_lost_at_exit() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let logs = TestDir::new("alog-flush");
    let log = logs.path().join("access.log");
    let mut proxy = Proxy::start(&config(&log, "", &blue, &green)).await;
    get(proxy.listen, "/first", &[]).await.expect("GET");
    let sent = Instant::now();
    let on_disk = eventually(Duration::from_secs(1), || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/first"))
    })
    .await;
    assert!(on_disk, "on disk within 1 s (waited {:?})", sent.elapsed());

    let mut conn = Conn::open(proxy.listen).await.expect("connect");
    for i in 0..200 {
        conn.get(&format!("/burst/{i}"), &[]).await.expect("GET");
    }
    drop(conn);
    proxy.signal("TERM");
    assert!(
        proxy.wait_exit(Duration::from_secs(15)).await.is_some(),
        "exits on SIGTERM"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().count(),
        201,
        "every line, the last ones flushed at exit"
    );
}
