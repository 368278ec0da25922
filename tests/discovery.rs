//! DNS service discovery (SPEC §12) against a real DNS server: dnsmasq on a
//! free 127.0.0.1 port, answering from a hosts file the test rewrites
//! (SIGHUP makes dnsmasq re-read it), origins on 127.0.0.2 and 127.0.0.3
//! behind one name, and the real switchyard binary following the name.
//!
//! dnsmasq reads nothing of the machine's: `--conf-file=/dev/null`,
//! `--no-hosts` (not /etc/hosts), `--no-resolv` (no upstream: it forwards
//! nowhere), `--local=/test/` (an unknown `.test` name is NXDOMAIN), and
//! `--user=<us>` so that started as root it does not switch to `nobody`
//! (started as any other user it stays that user). Its pid file and log
//! live in the test's temp dir; it is killed when the test ends.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, free_port, get, metric, Conn, Origin, Proxy, TestDir};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// `[discovery] refresh` of these tests: "the pool follows within refresh
/// + 1 s" is checked against it.
const REFRESH: Duration = Duration::from_secs(1);

/// A dnsmasq answering `*.test` from a hosts file in its own temp dir.
struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    dir: TestDir,
}

impl Dnsmasq {
    async fn start(hosts: &str) -> Dnsmasq {
        let dir = TestDir::new("dnsmasq");
        let mut dns = Dnsmasq {
            child: None,
            port: free_port(),
            dir,
        };
        std::fs::write(dns.hosts(), hosts).expect("write hosts file");
        dns.spawn().await;
        dns
    }

    fn hosts(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts dnsmasq on `port` and waits (bounded) until it answers.
    async fn spawn(&mut self) {
        let d = self.dir.path();
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .expect("user name");
        let child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",
                "--local-ttl=1",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--addn-hosts={}", self.hosts().display()))
            .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
            .arg(format!(
                "--log-facility={}",
                d.join("dnsmasq.log").display()
            ))
            .arg(format!("--user={}", user.trim()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dnsmasq.err")).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {DNSMASQ} (Debian's dnsmasq-base): {e}"));
        self.child = Some(child);
        let port = self.port;
        let answers = eventually(Duration::from_secs(10), || async move {
            tokio::task::spawn_blocking(move || query_a(port, "probe.test").is_some())
                .await
                .unwrap_or(false)
        })
        .await;
        assert!(answers, "dnsmasq does not answer: {}", self.log());
    }

    /// Rewrites the hosts file and sends SIGHUP (dnsmasq re-reads it);
    /// returns when the signal was sent.
    fn set_hosts(&self, hosts: &str) -> Instant {
        std::fs::write(self.hosts(), hosts).expect("write hosts file");
        let pid = self.child.as_ref().expect("dnsmasq running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
        Instant::now()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("dnsmasq.log"), read("dnsmasq.err"))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One A query over UDP: the answer's response code, or `None` without an
/// answer within 500 ms. Enough to know the server is up.
fn query_a(port: u16, name: &str) -> Option<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&q, ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    (n >= 4 && buf[0] == 0x12 && buf[1] == 0x34).then_some(buf[3] & 0x0f)
}

/// Origins "two" on 127.0.0.2 and "three" on 127.0.0.3, on one port (a
/// DNS backend names one port for all its addresses).
async fn two_origins() -> (Origin, Origin, u16) {
    for _ in 0..50 {
        let two = Origin::start(SocketAddr::from(([127, 0, 0, 2], 0)), "two")
            .await
            .expect("origin on 127.0.0.2");
        let port = two.addr().port();
        if let Ok(three) = Origin::start(SocketAddr::from(([127, 0, 0, 3], port)), "three").await {
            return (two, three, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn hosts_of(ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("{ip} app.test\n")).collect()
}

fn config(dns: &Dnsmasq, port: u16, extra_backend: &str) -> String {
    format!(
        "[discovery]\nnameservers = [\"{ns}\"]\nrefresh = \"1s\"\nmin_ttl = \"1s\"\ntimeout = \"500ms\"\n\
         [health]\ninterval = \"500ms\"\ntimeout = \"300ms\"\n\
         [pools.app]\nbackends = [{{ dns = \"app.test:{port}\" }}{extra_backend}]\n\
         [split]\napp = 100\n",
        ns = dns.nameserver()
    )
}

/// The `dns` entry of pool `pool` in `status`.
async fn dns_status(proxy: &Proxy, pool: &str) -> serde_json::Value {
    let status = proxy.ctl("status").await;
    status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["dns"].get(0))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

async fn addresses(proxy: &Proxy, pool: &str) -> Vec<String> {
    let entry = dns_status(proxy, pool).await;
    let mut addrs: Vec<String> = entry["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs
}

fn addrs_of(ips: &[&str], port: u16) -> Vec<String> {
    let mut addrs: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    addrs.sort();
    addrs
}

/// Steady traffic: one keep-alive client looping GETs until told to stop
/// (bounded by `MAX` requests and 60 s), recording when each answer came
/// and which origin gave it.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Result<String, String>)>>,
}

impl Traffic {
    const MAX: usize = 200_000;

    fn start(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut conn: Option<Conn> = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed)
                && seen.len() < Self::MAX
                && Instant::now() < deadline
            {
                let result = common::get_reusing(&mut conn, addr, "/").await;
                let outcome = match result {
                    Ok(r) if r.status == 200 => Ok(r.body.trim().to_string()),
                    Ok(r) => Err(format!("status {}: {}", r.status, r.body.trim())),
                    Err(e) => Err(e),
                };
                seen.push((Instant::now(), outcome));
                // Keeps the rate steady (about 500/s) without starving the
                // other work on this 2-core machine.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        });
        Traffic { stop, task }
    }

    async fn finish(self) -> Vec<(Instant, Result<String, String>)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic task")
    }
}

/// The first answer from `origin` after `since`.
fn first_from(
    seen: &[(Instant, Result<String, String>)],
    origin: &str,
    since: Instant,
) -> Option<Instant> {
    seen.iter()
        .find(|(at, r)| *at >= since && r.as_deref() == Ok(origin))
        .map(|(at, _)| *at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_dns_changes_under_steady_traffic_without_a_failed_request() {
    let (two, three, port) = two_origins().await;
    let dns = Dnsmasq::start(&hosts_of(&["127.0.0.2"])).await;
    let proxy = Proxy::start(&config(&dns, port, "")).await;
    let key = format!("{{pool=\"app\",name=\"app.test:{port}\"}}");
    // The name was looked up and its address checked before the listeners
    // accepted: the very first request is served.
    let first = get(proxy.listen, "/", &[]).await.expect("first request");
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, "two\n"),
        "{}",
        proxy.log()
    );

    let traffic = Traffic::start(proxy.listen);
    let bound = REFRESH + Duration::from_secs(1);

    // Grow: .3 joins. Served within refresh + 1 s of the DNS change.
    let grow = dns.set_hosts(&hosts_of(&["127.0.0.2", "127.0.0.3"]));
    assert!(
        eventually(bound + Duration::from_secs(2), || async {
            addresses(&proxy, "app").await == addrs_of(&["127.0.0.2", "127.0.0.3"], port)
        })
        .await,
        "the pool grows to both addresses:\n{}",
        proxy.log()
    );
    // Shrink: .2 leaves.
    let busy = Duration::from_millis(1500);
    tokio::time::sleep(busy).await; // traffic on both for a while (not a sync point)
    let shrink = dns.set_hosts(&hosts_of(&["127.0.0.3"]));
    assert!(
        eventually(bound + Duration::from_secs(2), || async {
            addresses(&proxy, "app").await == addrs_of(&["127.0.0.3"], port)
        })
        .await,
        "the pool shrinks to .3:\n{}",
        proxy.log()
    );
    // Replace: .3 leaves and .2 comes back in the same answer, so no
    // address of the old set stays (a blue/green behind one name).
    tokio::time::sleep(busy).await;
    let replace = dns.set_hosts(&hosts_of(&["127.0.0.2"]));
    assert!(
        eventually(bound + Duration::from_secs(2), || async {
            addresses(&proxy, "app").await == addrs_of(&["127.0.0.2"], port)
        })
        .await,
        "the set is replaced by .2:\n{}",
        proxy.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = traffic.finish().await;

    let failed: Vec<&String> = seen.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    let grow_at = first_from(&seen, "three", grow).expect("traffic reached .3 after it joined");
    let last_two_before_replace = seen
        .iter()
        .rev()
        .find(|(at, r)| *at >= shrink && *at < replace && r.as_deref() == Ok("two"))
        .map(|(at, _)| *at);
    let replace_at =
        first_from(&seen, "two", replace).expect("traffic reached .2 after the replace");
    eprintln!(
        "figures: {} requests, {} failed; DNS change → first request served by the new address: \
         grow {} ms, replace {} ms; last request to the removed .2 came {} ms after its removal",
        seen.len(),
        failed.len(),
        (grow_at - grow).as_millis(),
        (replace_at - replace).as_millis(),
        last_two_before_replace.map_or(0, |at| (at - shrink).as_millis()),
    );
    assert!(
        failed.is_empty(),
        "failed requests during the changes: {failed:?}"
    );
    assert!(
        grow_at - grow <= bound,
        "the new address served {} ms after the DNS change (bound {} ms)",
        (grow_at - grow).as_millis(),
        bound.as_millis()
    );
    assert!(
        replace_at - replace <= bound,
        "the replacing address served {} ms after the DNS change (bound {} ms)",
        (replace_at - replace).as_millis(),
        bound.as_millis()
    );
    // After the shrink settled, .3 alone answered until the replace.
    assert!(
        seen.iter()
            .filter(|(at, _)| *at >= shrink + bound && *at < replace)
            .all(|(_, r)| r.as_deref() == Ok("three")),
        "only .3 served between the shrink and the replace"
    );
    assert!(
        seen.iter()
            .filter(|(at, _)| *at >= replace + bound)
            .all(|(_, r)| r.as_deref() == Ok("two")),
        "only .2 served after the replace"
    );
    let metrics = proxy.admin_get("/metrics").await.body;
    assert_eq!(
        metric(
            &metrics,
            &format!("switchyard_discovery_changes_total{key}")
        ),
        3.0,
        "three changes counted:\n{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("switchyard_discovery_failures_total{key}")
        ),
        0.0
    );
    let log = proxy.log();
    assert!(
        log.contains(&format!(
            "[127.0.0.2:{port}, 127.0.0.3:{port}] -> [127.0.0.3:{port}]"
        )),
        "the change is logged with the old and new sets:\n{log}"
    );
    assert!(two.control().requests() > 0 && three.control().requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dns_server_keeps_the_last_set_and_a_reload_keeps_the_discovered_set() {
    let (_two, _three, port) = two_origins().await;
    let mut dns = Dnsmasq::start(&hosts_of(&["127.0.0.2", "127.0.0.3"])).await;
    let proxy = Proxy::start(&config(&dns, port, "")).await;
    let both = addrs_of(&["127.0.0.2", "127.0.0.3"], port);
    assert!(
        eventually(Duration::from_secs(5), || async {
            addresses(&proxy, "app").await == both
        })
        .await,
        "resolved to both:\n{}",
        proxy.log()
    );
    let entry = dns_status(&proxy, "app").await;
    assert!(entry["resolved_at"].is_string(), "{entry}");
    assert_eq!(entry["name"], format!("app.test:{port}"));

    // A reload that leaves the dns entry alone keeps the set and the
    // verdicts: no gap, no address back to "unknown".
    proxy.write_config(
        &config(&dns, port, "").replace("timeout = \"300ms\"", "timeout = \"400ms\""),
    );
    let reloaded = proxy.ctl("reload").await;
    assert_eq!(reloaded["ok"], true, "{reloaded}");
    assert_eq!(addresses(&proxy, "app").await, both);
    let status = proxy.ctl("status").await;
    let backends = status["pools"][0]["backends"]
        .as_array()
        .expect("backends")
        .clone();
    assert_eq!(backends.len(), 2, "{status}");
    assert!(
        backends
            .iter()
            .all(|b| b["health"] == "up" && b["dns"] == format!("app.test:{port}")),
        "both addresses kept their verdict through the reload: {status}"
    );

    // The DNS server goes away: the set stays, the failure is counted,
    // logged once however many refreshes fail.
    dns.kill();
    let key = format!("{{pool=\"app\",name=\"app.test:{port}\"}}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let metrics = proxy.admin_get("/metrics").await.body;
            metric(
                &metrics,
                &format!("switchyard_discovery_failures_total{key}"),
            ) >= 3.0
        })
        .await,
        "failed lookups are counted:\n{}",
        proxy.log()
    );
    assert_eq!(
        addresses(&proxy, "app").await,
        both,
        "the last good set stays"
    );
    let entry = dns_status(&proxy, "app").await;
    assert!(
        entry["last_error"].is_string(),
        "status shows the error: {entry}"
    );
    let results = common::load(proxy.listen, 40, 2, "/").await;
    assert!(
        common::failures(&results).is_empty(),
        "{:?}",
        common::failures(&results)
    );
    let bodies: std::collections::BTreeSet<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(bodies.len(), 2, "both addresses still serve: {bodies:?}");
    let log = proxy.log();
    assert_eq!(
        log.matches("lookup failed").count(),
        1,
        "one log line for the state change, not one per refresh:\n{log}"
    );

    // The server comes back with one address: the pool follows it.
    std::fs::write(dns.hosts(), hosts_of(&["127.0.0.3"])).expect("hosts");
    dns.spawn().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            addresses(&proxy, "app").await == addrs_of(&["127.0.0.3"], port)
        })
        .await,
        "the pool follows the server once it answers again:\n{}",
        proxy.log()
    );
    let entry = dns_status(&proxy, "app").await;
    assert!(
        entry["last_error"].is_null(),
        "the error is cleared: {entry}"
    );
    assert!(proxy.log().contains("resolves again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_address_finishes_its_in_flight_slow_request() {
    let (two, _three, port) = two_origins().await;
    let dns = Dnsmasq::start(&hosts_of(&["127.0.0.2"])).await;
    let proxy = Proxy::start(&config(&dns, port, "")).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(proxy.listen, "/", &[])
                .await
                .is_ok_and(|r| r.body == "two\n")
        })
        .await
    );
    two.control().set_delay(Duration::from_secs(3));
    let before = two.control().requests();
    let listen = proxy.listen;
    let slow = tokio::spawn(async move { get(listen, "/", &[]).await });
    assert!(
        eventually(Duration::from_secs(5), || async {
            two.control().requests() > before
        })
        .await,
        "the slow request reached .2"
    );
    let removed = dns.set_hosts(&hosts_of(&["127.0.0.3"]));
    assert!(
        eventually(Duration::from_secs(3), || async {
            addresses(&proxy, "app").await == addrs_of(&["127.0.0.3"], port)
        })
        .await,
        "the pool moved to .3:\n{}",
        proxy.log()
    );
    assert!(
        !slow.is_finished(),
        "the slow request is still in flight when .2 leaves"
    );
    let fresh = get(proxy.listen, "/", &[]).await.expect("a new request");
    assert_eq!(fresh.body, "three\n", "new requests go to .3");
    let reply = slow
        .await
        .expect("slow task")
        .expect("the slow request completes");
    assert_eq!((reply.status, reply.body.as_str()), (200, "two\n"));
    eprintln!(
        "figures: the in-flight request on the removed address completed {} ms after the DNS change",
        removed.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_starts_empty_and_check_only_warns() {
    let (_two, _three, port) = two_origins().await;
    let dns = Dnsmasq::start("").await;
    let proxy = Proxy::start(&config(&dns, port, "")).await;

    // NXDOMAIN at start: the proxy runs, the pool has no backend yet.
    let reply = get(proxy.listen, "/", &[]).await.expect("an answer");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body.contains("app"),
        "the 503 names the pool: {}",
        reply.body
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            dns_status(&proxy, "app").await["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("NXDOMAIN"))
        })
        .await,
        "status shows the failing lookup: {}",
        dns_status(&proxy, "app").await
    );
    assert!(dns_status(&proxy, "app").await["resolved_at"].is_null());

    // `check`: valid (exit 0), with a warning naming the backend.
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(proxy.config_path())
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains(&format!("app.test:{port}"))
            && stderr.contains("does not resolve"),
        "{stderr}"
    );

    // The name appears: the pool gets it (failed lookups retry after min_ttl).
    dns.set_hosts(&hosts_of(&["127.0.0.2"]));
    assert!(
        eventually(REFRESH + Duration::from_secs(2), || async {
            get(proxy.listen, "/", &[])
                .await
                .is_ok_and(|r| r.body == "two\n")
        })
        .await,
        "served once the name resolves:\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_answer_is_a_failure_unless_allow_empty() {
    let (_two, _three, port) = two_origins().await;
    let dns = Dnsmasq::start("127.0.0.2 app.test\n127.0.0.2 spare.test\n").await;
    let body = config(&dns, port, "").replace(
        "[split]",
        &format!(
            "[pools.spare]\nbackends = [{{ dns = \"spare.test:{port}\", allow_empty = true }}]\n[split]"
        ),
    ) + "spare = 0\n";
    let proxy = Proxy::start(&body).await;
    let one = addrs_of(&["127.0.0.2"], port);
    assert!(
        eventually(Duration::from_secs(5), || async {
            addresses(&proxy, "app").await == one && addresses(&proxy, "spare").await == one
        })
        .await,
        "both resolved:\n{}",
        proxy.log()
    );
    // Both names disappear (NXDOMAIN).
    dns.set_hosts("");
    assert!(
        eventually(REFRESH + Duration::from_secs(2), || async {
            addresses(&proxy, "spare").await.is_empty()
        })
        .await,
        "allow_empty = true follows the empty answer:\n{}",
        proxy.log()
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            dns_status(&proxy, "app").await["failures"].as_u64() >= Some(1)
        })
        .await
    );
    assert_eq!(
        addresses(&proxy, "app").await,
        one,
        "app keeps its last good set"
    );
    let spare = dns_status(&proxy, "spare").await;
    assert_eq!(spare["failures"], 0, "{spare}");
    assert_eq!(spare["changes"], 1, "{spare}");
    let ok = get(proxy.listen, "/", &[]).await.expect("answer");
    assert_eq!(ok.body, "two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_each_dns_name_with_its_addresses() {
    let Some(browser) = common::browser::chromium() else {
        common::skip("no chromium binary on PATH (apt-get install -y chromium)");
        return;
    };
    let (_two, _three, port) = two_origins().await;
    let dns = Dnsmasq::start(&hosts_of(&["127.0.0.2", "127.0.0.3"])).await;
    let proxy = Proxy::start(&config(&dns, port, "")).await;
    let both = addrs_of(&["127.0.0.2", "127.0.0.3"], port);
    assert!(
        eventually(REFRESH + Duration::from_secs(2), || async {
            addresses(&proxy, "app").await == both
        })
        .await,
        "{}",
        dns_status(&proxy, "app").await
    );
    let url = format!("http://{}/", proxy.admin);
    let dom = tokio::task::spawn_blocking(move || common::browser::rendered(&browser, &url))
        .await
        .expect("chromium task");
    let line = format!("dns app.test:{port}: {}", both.join(", "));
    assert!(dom.contains(&line), "{line} in the page:\n{dom}");
    assert!(dom.contains(" s ago"), "when it was resolved:\n{dom}");
}
