//! Traffic mirroring (SPEC §11) through the real binary on loopback: the
//! copies that reach the mirror pool (method, target, body, the
//! `x-switchyard-mirror` header), the share and the method filter, the
//! body limit, a mirror pool that is dead, slow or resets (clients see
//! nothing of it), a full queue (copies dropped and counted), the copies
//! counted apart from the pool's live traffic, the refused cutover and
//! canary start on a failing mirror, and reloads. The request-path tests
//! run on both HTTP/1.1 paths (`<test>::fast`, `<test>::pingora`).

mod common;
#[macro_use]
#[path = "common/proxy_path.rs"]
mod proxy_path;
#[path = "common/raw_origin.rs"]
mod raw_origin;
#[path = "common/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use proxy_path::ProxyPath;
use raw_origin::{Act, RawOrigin, Req};

/// blue takes every request; green is the mirror pool unless told.
fn config(blue: SocketAddr, green: SocketAddr, extra: &str) -> String {
    format!(
        "[pools.blue]\nbackends = [\"{blue}\"]\n[pools.green]\nbackends = [\"{green}\"]\n\
         [split]\nblue = 100\ngreen = 0\n{extra}"
    )
}

/// A mirror origin that answers every request `green` and records it.
async fn recording_origin() -> RawOrigin {
    RawOrigin::start(|_| Act::Send(raw_origin::ok(b"green"))).await
}

/// The requests that reached `origin` as mirror copies.
fn copies(origin: &RawOrigin) -> Vec<Req> {
    origin
        .requests()
        .into_iter()
        .filter(|r| r.head.get("x-switchyard-mirror") == Some("1"))
        .collect()
}

async fn metrics(proxy: &Proxy) -> String {
    proxy.admin_get("/metrics").await.body
}

/// Sum of a family's samples whose line contains every one of `labels`.
fn sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the mirror has answered as many copies as `origin`
/// received and neither moves for 300 ms: every copy made has been sent.
async fn settled(proxy: &Proxy, origin: &RawOrigin) -> usize {
    let mut last = usize::MAX;
    for _ in 0..100 {
        let seen = copies(origin).len();
        let counted = sum(
            &metrics(proxy).await,
            "switchyard_mirror_requests_total",
            &[],
        ) as usize;
        if seen == counted && seen == last {
            return seen;
        }
        last = if seen == counted { seen } else { usize::MAX };
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("mirror copies never settled:\n{}", proxy.log());
}

/// `promtool check metrics` passes the body with the mirror's families
/// (skipped, and said, where promtool is not installed).
fn promtool_accepts(body: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            common::skip(&format!("promtool not runnable ({e})"));
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body.as_bytes()).expect("write to promtool");
    }
    let output = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
}

/// A raw request, written in one piece so the fast path sees its body
/// with its head.
async fn send_raw(addr: SocketAddr, request: &[u8]) -> wire::Response {
    let mut w = wire::Wire::connect(addr).await;
    wire::exchange(&mut w, request).await
}

both_paths!(copies_arrive_with_method_target_body_and_the_mirror_header);
async fn copies_arrive_with_method_target_body_and_the_mirror_header(path: ProxyPath) {
    let blue = origin("blue").await;
    let green = recording_origin().await;
    let proxy = Proxy::start_with(
        path.server_line(),
        &config(
            blue.addr(),
            green.addr,
            "[mirror]\npool = \"green\"\npercent = 100\nmethods = [\"GET\", \"POST\"]\n",
        ),
    )
    .await;
    let get = send_raw(
        proxy.listen,
        b"GET /items?page=2 HTTP/1.1\r\nHost: shop\r\nX-Trace: abc\r\n\r\n",
    )
    .await;
    assert_eq!((get.status, get.text().as_str()), (200, "blue\n"));
    let post = send_raw(
        proxy.listen,
        b"POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 11\r\n\r\n{\"qty\": 3}\n",
    )
    .await;
    assert_eq!(post.status, 200);
    let chunked = send_raw(
        proxy.listen,
        b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(chunked.status, 200);
    assert_eq!(settled(&proxy, &green).await, 3, "{:?}", green.lines());
    let mut seen = copies(&green);
    seen.sort_by(|a, b| a.target.cmp(&b.target));
    let summary: Vec<(&str, &str, &[u8])> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/items?page=2", &b""[..]),
            ("POST", "/orders", &b"{\"qty\": 3}\n"[..]),
            ("POST", "/upload", &b"wikipedia"[..]),
        ]
    );
    let get_copy = &seen[0];
    assert_eq!(get_copy.head.get("host"), Some("shop"));
    assert_eq!(get_copy.head.get("x-trace"), Some("abc"));
    assert_eq!(get_copy.head.get("x-forwarded-for"), Some("127.0.0.1"));
    // Counted as the mirror's, never as green's live traffic.
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "switchyard_mirror_requests_total{pool=\"green\",class=\"2xx\"}"
        ),
        3.0
    );
    assert_eq!(
        sum(&text, "switchyard_requests_total", &["pool=\"green\""]),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "switchyard_requests_total{pool=\"blue\",class=\"2xx\"}"
        ),
        3.0
    );
    promtool_accepts(&text);
    let status = proxy.ctl("status").await;
    assert_eq!(status["mirror"]["pool"], "green");
    assert_eq!(status["mirror"]["copies"], 3);
    assert_eq!(status["pools"][1]["window"]["requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_share_and_the_methods_decide_what_is_copied() {
    let blue = origin("blue").await;
    let green = recording_origin().await;
    let proxy = Proxy::start(&config(
        blue.addr(),
        green.addr,
        "[mirror]\npool = \"green\"\npercent = 30\n",
    ))
    .await;
    let gets = load(proxy.listen, 400, 8, "/share").await;
    assert!(failures(&gets).is_empty(), "{:?}", failures(&gets));
    for _ in 0..40 {
        let post = send_raw(
            proxy.listen,
            b"POST /not-copied HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        )
        .await;
        assert_eq!(post.status, 200);
    }
    let copied = settled(&proxy, &green).await;
    // Binomial(400, 0.3): mean 120, sd 9.2; ±5 sd.
    assert!(
        (74..=166).contains(&copied),
        "{copied} of 400 GETs copied at 30 %"
    );
    assert!(copies(&green).iter().all(|r| r.method == "GET"));
}

both_paths!(bodies_over_max_body_are_skipped_and_counted);
async fn bodies_over_max_body_are_skipped_and_counted(path: ProxyPath) {
    let blue = origin("blue").await;
    let green = recording_origin().await;
    let proxy = Proxy::start_with(
        path.server_line(),
        &config(
            blue.addr(),
            green.addr,
            "[mirror]\npool = \"green\"\npercent = 100\nmethods = [\"POST\"]\nmax_body = 16\n",
        ),
    )
    .await;
    let small = send_raw(
        proxy.listen,
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .await;
    let mut big = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".to_vec();
    big.extend_from_slice(&[b'z'; 100]);
    let big = send_raw(proxy.listen, &big).await;
    let chunked_big = send_raw(
        proxy.listen,
        b"POST /big-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
    )
    .await;
    for response in [&small, &big, &chunked_big] {
        assert_eq!((response.status, response.text().as_str()), (200, "blue\n"));
    }
    assert_eq!(settled(&proxy, &green).await, 1);
    assert_eq!(copies(&green)[0].target, "/small");
    assert_eq!(copies(&green)[0].body, b"0123456789");
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(
            &text,
            "switchyard_mirror_skipped_total{pool=\"green\",reason=\"body_too_large\"}"
        ),
        2.0,
        "{text}"
    );
}

/// Client answers through a proxy whose mirror pool is `green`: every one
/// 200 from blue, none slower than `limit`.
async fn clients_unaffected(proxy: &Proxy, limit: Duration) {
    let mut conn = None;
    for i in 0..30 {
        let started = Instant::now();
        let reply = get_reusing(&mut conn, proxy.listen, "/client")
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let took = started.elapsed();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "blue\n"),
            "request {i}"
        );
        assert!(
            took < limit,
            "request {i} took {took:?} with the mirror pool failing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_slow_or_resetting_mirror_pool_changes_nothing_for_clients() {
    let blue = origin("blue").await;
    // Health checks off: the copies themselves meet the failures.
    let mirror = "[health]\nenabled = false\n[mirror]\npool = \"green\"\npercent = 100\n";

    let dead = loopback(free_port());
    let proxy = Proxy::start(&config(blue.addr(), dead, mirror)).await;
    clients_unaffected(&proxy, Duration::from_millis(800)).await;
    let refused =
        "switchyard_mirror_upstream_failures_total{pool=\"green\",kind=\"connect_refused\"}";
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&metrics(&proxy).await, refused) >= 30.0
        })
        .await,
        "{}",
        metrics(&proxy).await
    );
    drop(proxy);

    let slow = origin("green").await;
    slow.control().set_delay(Duration::from_secs(2));
    let proxy = Proxy::start(&config(blue.addr(), slow.addr(), mirror)).await;
    clients_unaffected(&proxy, Duration::from_millis(800)).await;
    // The copies did go out, and are answered 2 s later.
    assert!(
        eventually(Duration::from_secs(15), || async {
            metric(
                &metrics(&proxy).await,
                "switchyard_mirror_requests_total{pool=\"green\",class=\"2xx\"}",
            ) >= 30.0
        })
        .await,
        "{}",
        metrics(&proxy).await
    );
    let text = metrics(&proxy).await;
    let slow_copies = metric(
        &text,
        "switchyard_mirror_request_duration_seconds_bucket{pool=\"green\",le=\"1\"}",
    );
    assert_eq!(
        slow_copies, 0.0,
        "copies of a 2 s mirror answered within 1 s?\n{text}"
    );
    drop(proxy);

    let resetting = RawOrigin::start(|_| Act::Hangup).await;
    let proxy = Proxy::start(&config(blue.addr(), resetting.addr, mirror)).await;
    clients_unaffected(&proxy, Duration::from_millis(800)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(
                &metrics(&proxy).await,
                "switchyard_mirror_requests_total{pool=\"green\",class=\"error\"}",
            ) >= 30.0
        })
        .await,
        "{}",
        metrics(&proxy).await
    );
}

/// The mirror pool's answers by target: 200 with a length, 503 chunked,
/// 204, 404 — four framings a pipelined reader must step over.
fn mixed_answer(request: &Req) -> Act {
    Act::Send(match request.target.as_str() {
        "/len" => raw_origin::ok(b"green"),
        "/chunked" => {
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ngreen\r\n0\r\n\r\n"
                .to_vec()
        }
        "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        _ => raw_origin::respond("404 Not Found", &[], b"no"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_copies_are_each_counted_by_their_own_answer() {
    let blue = origin("blue").await;
    let green = RawOrigin::start(mixed_answer).await;
    let proxy = Proxy::start(&config(
        blue.addr(),
        green.addr,
        "[health]\nenabled = false\n[mirror]\npool = \"green\"\npercent = 100\n",
    ))
    .await;
    let targets = ["/len", "/chunked", "/empty", "/missing"];
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8usize {
        let addr = proxy.listen;
        clients.spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            for i in 0..25usize {
                let target = targets[(client + i) % targets.len()];
                let reply = conn.get(target, &[]).await.expect("answer");
                assert_eq!(reply.status, 200, "{target}");
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client");
    }
    assert_eq!(settled(&proxy, &green).await, 200);
    let text = metrics(&proxy).await;
    let class = |c: &str| {
        metric(
            &text,
            &format!("switchyard_mirror_requests_total{{pool=\"green\",class=\"{c}\"}}"),
        )
    };
    // 50 of each target: /len and /empty are 2xx.
    assert_eq!(
        (class("2xx"), class("5xx"), class("4xx"), class("error")),
        (100.0, 50.0, 50.0, 0.0),
        "{text}"
    );
    // Copies share at most one connection per mirror worker.
    assert!(
        green.accepted() <= 64,
        "{} mirror connections",
        green.accepted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_copies_and_counts_them() {
    let blue = origin("blue").await;
    // A mirror pool that takes every copy and never answers: each worker
    // stays on its batch until the read timeout.
    let holding = RawOrigin::accept(|mut w, _, _| async move {
        let _ = w
            .read_to_eof(tokio::time::Instant::now() + Duration::from_secs(60))
            .await;
    })
    .await;
    let proxy = Proxy::start_with(
        "read_timeout = \"30s\"\n",
        &config(
            blue.addr(),
            holding.addr,
            "[health]\nenabled = false\n[mirror]\npool = \"green\"\npercent = 100\n",
        ),
    )
    .await;
    // 8 KiB heads: the thread's 2 MiB queue holds about 250 copies.
    let pad = "p".repeat(8 * 1024);
    let total = 1500;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (addr, pad) = (proxy.listen, pad.clone());
        workers.spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            let mut slowest = Duration::ZERO;
            for i in (worker..total).step_by(6) {
                let started = Instant::now();
                let reply = conn.get("/", &[("x-pad", &pad)]).await;
                slowest = slowest.max(started.elapsed());
                let reply = reply.unwrap_or_else(|e| panic!("request {i}: {e}"));
                assert_eq!(reply.status, 200, "request {i}");
            }
            slowest
        });
    }
    while let Some(slowest) = workers.join_next().await {
        let slowest = slowest.expect("client");
        assert!(
            slowest < Duration::from_secs(1),
            "a client waited {slowest:?}"
        );
    }
    let text = metrics(&proxy).await;
    let dropped = metric(
        &text,
        "switchyard_mirror_dropped_total{pool=\"green\",reason=\"queue_full\"}",
    );
    // At most 64 pieces sending (the copies come a few at a time, and 8
    // of 8 KiB fill a 64 KiB piece), one handed over and a full queue
    // (about 250) are held: the rest is dropped.
    assert!(
        (800.0..=1500.0).contains(&dropped),
        "{dropped} of {total} copies dropped\n{text}"
    );
    assert!(
        holding.accepted() <= 64,
        "{} mirror connections",
        holding.accepted()
    );
    let status = proxy.ctl("status").await;
    assert_eq!(status["mirror"]["dropped"]["queue_full"], dropped as u64);
}

const GUARD: &str = "[guard]\nmax_error_rate = 5.0\nmin_requests = 20\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_and_canary_start_to_a_failing_mirror_are_refused_unless_forced() {
    let blue = origin("blue").await;
    let green = origin("green").await;
    green.control().set_fail_percent(100);
    let proxy = Proxy::start(&config(
        blue.addr(),
        green.addr(),
        &format!("{GUARD}[mirror]\npool = \"green\"\npercent = 100\n"),
    ))
    .await;
    let gets = load(proxy.listen, 60, 4, "/").await;
    assert!(
        failures(&gets).is_empty(),
        "clients saw the mirror's 500s: {:?}",
        failures(&gets)
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            proxy.ctl("status").await["mirror"]["verdict"] == "failing"
        })
        .await,
        "{}",
        proxy.ctl("status").await
    );
    // The mirror's 500s are not green's live traffic, nor the guard's.
    let text = metrics(&proxy).await;
    assert!(
        metric(
            &text,
            "switchyard_mirror_requests_total{pool=\"green\",class=\"5xx\"}"
        ) >= 20.0
    );
    assert_eq!(
        sum(&text, "switchyard_requests_total", &["pool=\"green\""]),
        0.0
    );

    let refused = proxy.ctl("cutover green").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["kind"], "mirror_failing");
    let message = refused["error"].as_str().unwrap_or_default();
    for expected in ["copies failed", "limit 5%", "reached its bound", "--force"] {
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }
    let canary = proxy.ctl("canary start green").await;
    assert_eq!(
        (canary["ok"].clone(), canary["kind"].clone()),
        (false.into(), "mirror_failing".into())
    );
    assert_eq!(proxy.ctl("status").await["split"]["green"], 0.0);

    let socket = proxy.socket();
    let socket = socket.to_str().expect("socket path");
    let (code, _, stderr) = ctl_cli(&["-s", socket, "cutover", "green"]).await;
    assert_eq!(code, 1, "{stderr}");
    let (code, text, _) = ctl_cli(&["-s", socket, "status"]).await;
    assert_eq!(code, 0);
    assert!(text.contains("mirror: 100% of GET,HEAD to green"), "{text}");
    assert!(text.contains("verdict: failing"), "{text}");

    // The dashboard shows the copies' row, in a real browser.
    if let Some(browser) = common::browser::chromium() {
        let url = format!("http://{}/", proxy.admin);
        let dom = tokio::task::spawn_blocking(move || common::browser::rendered(&browser, &url))
            .await
            .expect("chromium task");
        assert!(dom.contains("copies → "), "no mirror row:\n{dom}");
        assert!(dom.contains("mirror failing"), "no verdict:\n{dom}");
    } else {
        common::skip("the dashboard check: no chromium binary on PATH");
    }

    let forced = proxy.ctl("cutover --force green").await;
    assert_eq!(forced["ok"], true, "{forced}");
    assert!(forced["message"]
        .as_str()
        .unwrap_or_default()
        .contains("forced: the mirrored traffic"));
    assert_eq!(proxy.ctl("status").await["split"]["green"], 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_mirror_or_too_little_evidence_lets_changes_through() {
    let blue = origin("blue").await;
    let green = origin("green").await;
    let proxy = Proxy::start(&config(
        blue.addr(),
        green.addr(),
        &format!("{GUARD}[mirror]\npool = \"green\"\npercent = 100\n"),
    ))
    .await;
    let early = proxy.ctl("canary start green").await;
    assert_eq!(early["ok"], true, "{early}");
    let message = early["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("insufficient mirror evidence: 0 of 20"),
        "{message}"
    );
    assert_eq!(proxy.ctl("canary abort").await["ok"], true);

    let gets = load(proxy.listen, 60, 4, "/").await;
    assert!(failures(&gets).is_empty());
    assert!(
        eventually(Duration::from_secs(10), || async {
            proxy.ctl("status").await["mirror"]["verdict"] == "passing"
        })
        .await,
        "{}",
        proxy.ctl("status").await
    );
    let cutover = proxy.ctl("cutover green").await;
    assert_eq!(cutover["ok"], true, "{cutover}");
    let message = cutover["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("failed (0.00%), within the 5% error-rate limit"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_the_mirror_on_changes_it_and_turns_it_off() {
    let blue = origin("blue").await;
    let green = recording_origin().await;
    let proxy = Proxy::start(&config(blue.addr(), green.addr, "")).await;
    assert!(failures(&load(proxy.listen, 10, 2, "/before").await).is_empty());
    assert!(proxy.ctl("status").await.get("mirror").is_none());
    assert!(!metrics(&proxy).await.contains("switchyard_mirror_"));

    proxy.write_config(&config(
        blue.addr(),
        green.addr,
        "[mirror]\npool = \"green\"\npercent = 100\n",
    ));
    let reloaded = proxy.ctl("reload").await;
    assert_eq!(reloaded["ok"], true, "{reloaded}");
    assert!(reloaded["message"]
        .as_str()
        .unwrap_or_default()
        .contains("[mirror] changed"));
    assert!(failures(&load(proxy.listen, 10, 2, "/during").await).is_empty());
    assert_eq!(settled(&proxy, &green).await, 10);
    assert!(copies(&green).iter().all(|r| r.target == "/during"));

    // methods = ["HEAD"] only: GETs are no longer copied.
    proxy.write_config(&config(
        blue.addr(),
        green.addr,
        "[mirror]\npool = \"green\"\npercent = 100\nmethods = [\"HEAD\"]\n",
    ));
    assert_eq!(proxy.ctl("reload").await["ok"], true);
    assert!(failures(&load(proxy.listen, 10, 2, "/head-only").await).is_empty());
    assert_eq!(
        proxy.ctl("status").await["mirror"]["copies"],
        10,
        "the counts kept"
    );

    proxy.write_config(&config(blue.addr(), green.addr, ""));
    assert_eq!(proxy.ctl("reload").await["ok"], true);
    assert!(failures(&load(proxy.listen, 10, 2, "/after").await).is_empty());
    assert!(proxy.ctl("status").await.get("mirror").is_none());
    assert_eq!(copies(&green).len(), 10);

    // A mirror pool that does not exist is refused, the running config stays.
    proxy.write_config(&config(
        blue.addr(),
        green.addr,
        "[mirror]\npool = \"red\"\npercent = 100\n",
    ));
    let bad = proxy.ctl("reload").await;
    assert_eq!(bad["ok"], false);
    assert!(bad["error"]
        .as_str()
        .unwrap_or_default()
        .contains("mirror.pool: no such pool \"red\""));
}
