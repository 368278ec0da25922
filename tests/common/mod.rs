//! Test harness shared by the integration tests: real origins on
//! `127.0.0.1:0`, the real `switchyard` binary as a child process, and a
//! small keep-alive HTTP client. Every wait is bounded and polls for a
//! condition instead of sleeping a fixed time.

#![allow(dead_code)]

pub mod browser;
pub mod etcd;
pub mod fleet;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub use switchyard::origin::Origin;

pub mod tls;

/// A test that needs a real server this machine lacks (etcd, HAProxy,
/// chromium, promtool) says so and returns without checking anything. Under
/// `SWITCHYARD_REQUIRE_SERVERS=1`, which `.ci/run` sets after installing
/// them all, it fails instead: a CI run must never pass by skipping.
pub fn skip(why: &str) {
    if std::env::var_os("SWITCHYARD_REQUIRE_SERVERS").is_some_and(|v| v == "1") {
        panic!("{why}: SWITCHYARD_REQUIRE_SERVERS=1 does not allow skipping this test");
    }
    eprintln!("SKIPPED: {why}");
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on, for a proxy to bind (pingora binds
/// its listeners itself, so a test cannot hand it a bound socket) or as a
/// dead backend.
///
/// A port taken with `bind(:0)` and released can be handed out again at
/// once to an origin or to a client socket of a test running in parallel;
/// a proxy then cannot bind it, yet its port answers. So these ports come
/// from just below the kernel's ephemeral range, which neither `bind(:0)`
/// nor `connect` draw from. Each is given out once per test process (a
/// counter from a pid-dependent start, so test processes running side by
/// side rarely meet) and checked free by binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 10_000;
    let Some(base) = below_ephemeral_range(SPAN) else {
        return any_free_port();
    };
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = (base + offset) as u16;
        if TcpListener::bind(loopback(port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {base}..{}", base + SPAN);
}

/// The first of `span` ports that end just below the ephemeral range, if
/// the range leaves that much room above the privileged ports.
fn below_ephemeral_range(span: u32) -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u32 = range.split_whitespace().next()?.parse().ok()?;
    low.checked_sub(span).filter(|base| *base >= 1024)
}

/// Fallback where the ephemeral range cannot be read or avoided.
fn any_free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub async fn origin(name: &str) -> Origin {
    Origin::start(loopback(0), name)
        .await
        .expect("start origin")
}

/// The switchyard binary under test, running `run -c <dir>/switchyard.toml`.
pub struct Proxy {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: TestDir,
    /// The generated `[server]` and `[admin]` sections, for rewrites.
    header: String,
}

impl Proxy {
    /// Writes a config whose `[server]` and `[admin]` sections are generated
    /// (free ports, private socket and state dir) followed by `body`, starts
    /// the proxy and waits until `/ready` answers 200.
    pub async fn start(body: &str) -> Proxy {
        Proxy::start_with("", body).await
    }

    /// Like [`Proxy::start`], with extra lines for the `[server]` section.
    pub async fn start_with(server_extra: &str, body: &str) -> Proxy {
        let mut proxy = Proxy::launch(loopback(free_port()), server_extra, body);
        proxy.wait_ready().await;
        proxy
    }

    /// Starts a proxy that listens on `listen` and returns once its admin
    /// HTTP listener answers, ready or not (for tests of readiness itself).
    pub async fn start_unready(listen: SocketAddr, body: &str) -> Proxy {
        let mut proxy = Proxy::launch(listen, "", body);
        proxy.wait_admin("/health", "up", |_| true).await;
        proxy
    }

    /// Writes the config (generated `[server]` and `[admin]` sections, then
    /// `body`) and starts the process.
    fn launch(listen: SocketAddr, server_extra: &str, body: &str) -> Proxy {
        let dir = TestDir::new("proxy");
        let admin = loopback(free_port());
        // A short grace period keeps shutdowns quick, unless the test sets one.
        let grace = if server_extra.contains("grace_period") {
            ""
        } else {
            "grace_period = \"1s\"\n"
        };
        let header = format!(
            "[server]\nlisten = [\"{listen}\"]\nthreads = 1\n{grace}{server_extra}\n\
             [admin]\nsocket = \"{d}/admin.sock\"\nhttp = \"{admin}\"\nstate_dir = \"{d}/state\"\n\n",
            d = dir.path().display()
        );
        std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
        std::fs::write(
            dir.path().join("switchyard.toml"),
            format!("{header}{body}"),
        )
        .expect("write config");
        Proxy::spawn(dir, listen, admin, header)
    }

    /// Replaces the config file's body (keeping the generated sections) by
    /// writing a temp file and renaming it over, as editors do.
    pub fn write_config(&self, body: &str) {
        let temp = self.dir.path().join(".switchyard.toml.tmp");
        std::fs::write(&temp, format!("{}{body}", self.header)).expect("write config");
        std::fs::rename(&temp, self.config_path()).expect("rename config");
    }

    /// The full config text for `body`, with this proxy's generated
    /// `[server]` and `[admin]` sections (for tests that lay files out
    /// themselves).
    pub fn config_text(&self, body: &str) -> String {
        format!("{}{body}", self.header)
    }

    /// The process id, for sending signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (SIGKILL) and starts a new one on the same
    /// directory, config and state.
    pub async fn restart(mut self) -> Proxy {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, TestDir::new("spent"));
        let (listen, admin, header) = (self.listen, self.admin, self.header.clone());
        drop(self);
        let mut proxy = Proxy::spawn(dir, listen, admin, header);
        proxy.wait_ready().await;
        proxy
    }

    /// Sends SIGKILL and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits (bounded) for the process to exit; its status if it did.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// One admin command over the socket; the JSON answer.
    pub async fn ctl(&self, command: &str) -> serde_json::Value {
        let (socket, command) = (self.socket(), command.to_string());
        tokio::task::spawn_blocking(move || switchyard::protocol::wire::request(&socket, &command))
            .await
            .expect("ctl task")
            .unwrap_or_else(|e| panic!("admin socket: {e:?}"))
    }

    fn spawn(dir: TestDir, listen: SocketAddr, admin: SocketAddr, header: String) -> Proxy {
        let log = std::fs::File::create(dir.path().join("proxy.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("run")
            .arg("-c")
            .arg(dir.path().join("switchyard.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        Proxy {
            child,
            listen,
            admin,
            dir,
            header,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchyard.toml")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `/ready` answers 200.
    pub async fn wait_ready(&mut self) {
        self.wait_admin("/ready", "ready", |status| status == 200)
            .await;
    }

    /// Polls `path` on the admin listener until its status is `wanted`, for
    /// up to 30 s; panics with the log if the process exits or time is up.
    async fn wait_admin(&mut self, path: &str, what: &str, wanted: fn(u16) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("switchyard exited early ({status}):\n{}", self.log());
            }
            if let Ok(reply) = get(self.admin, path, &[]).await {
                if wanted(reply.status) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("switchyard not {what} within 30 s:\n{}", self.log());
    }

    /// GET on the admin HTTP listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        get(self.admin, path, &[]).await.expect("admin request")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- switchyard log ---\n{}", self.log());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|e| format!("connect to {addr}: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Conn { sender, addr })
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut request = http::Request::get(path).header("host", self.addr.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let exchange = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "request timed out".to_string())?
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// GET over a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    Conn::open(addr).await?.get(path, headers).await
}

/// One GET over `conn`, (re)opening it when there is none or the server
/// closed it; a failed request drops the connection.
pub async fn get_reusing(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    path: &str,
) -> Result<Reply, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Conn::open(addr).await.ok();
    }
    let result = match conn.as_mut() {
        Some(c) => c.get(path, &[]).await,
        None => Err("cannot connect".to_string()),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// Sends `total` GETs over `concurrency` keep-alive connections (reopening a
/// connection the server closed) and returns every outcome in order of
/// completion. Bounded: each request has its own timeout.
pub async fn load(
    addr: SocketAddr,
    total: usize,
    concurrency: usize,
    path: &'static str,
) -> Vec<Result<Reply, String>> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let next = next.clone();
        workers.spawn(async move {
            let mut results = Vec::new();
            let mut conn: Option<Conn> = None;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                results.push(get_reusing(&mut conn, addr, path).await);
            }
            results
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(done) = workers.join_next().await {
        all.extend(done.expect("load worker"));
    }
    all
}

/// Sends GETs over `concurrency` connections until `stop` is set (or
/// `max` requests were sent, a safety bound) and returns every outcome.
pub async fn load_until(
    addr: SocketAddr,
    concurrency: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: usize,
) -> Vec<Result<Reply, String>> {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (stop, sent) = (stop.clone(), sent.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            let mut conn: Option<Conn> = None;
            while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < max {
                results.push(get_reusing(&mut conn, addr, "/").await);
            }
            results
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.expect("load worker"));
    }
    all
}

/// The failed outcomes of a load run (transport errors and non-2xx).
pub fn failures(results: &[Result<Reply, String>]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| match r {
            Ok(reply) if reply.status == 200 => None,
            Ok(reply) => Some(format!("status {}: {}", reply.status, reply.body.trim())),
            Err(e) => Some(e.clone()),
        })
        .collect()
}

/// Runs `switchyard ctl ARGS…` and returns (exit code, stdout, stderr).
pub async fn ctl_cli(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("ctl")
            .args(&args)
            .output()
    })
    .await
    .expect("ctl task")
    .expect("run switchyard ctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The value of one Prometheus sample line (`name{labels}`), 0 if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 20 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver on loopback that records every event body.
pub async fn receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<parking_lot::Mutex<Vec<serde_json::Value>>>,
) {
    slow_receiver(Duration::ZERO).await
}

/// A webhook receiver that takes `delay` to answer each POST (and records
/// the event when it answers).
pub async fn slow_receiver(
    delay: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<parking_lot::Mutex<Vec<serde_json::Value>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let events = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = events.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            tokio::time::sleep(delay).await;
                            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                                seen.lock().push(v);
                            }
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
    (addr, events)
}

/// Is `pid` a live process (not gone, not a zombie)?
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Stops a process this test did not start (the upgraded successor).
pub async fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let gone = eventually(
        Duration::from_secs(15),
        || async move { !process_alive(pid) },
    )
    .await;
    if !gone {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
}

/// After a binary upgrade: the pid of the process that now answers on the
/// admin socket, once it is not `old_pid` (panics after 30 s).
pub async fn successor_pid(socket: &Path, old_pid: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let socket = socket.to_path_buf();
        let status = tokio::task::spawn_blocking(move || {
            switchyard::protocol::wire::request(&socket, "status")
        })
        .await
        .expect("status task");
        if let Some(pid) = status.ok().and_then(|s| s["pid"].as_u64()) {
            if pid != u64::from(old_pid) {
                return pid as u32;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no successor answered on the admin socket within 30 s");
}

/// `switchyard check -c PATH`: its exit code and its stderr.
pub fn check_file(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run switchyard check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
