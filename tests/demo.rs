//! `switchyard demo` with the real binary on loopback: both scenarios play
//! to their end and exit 0, the origins obey the commands the demo prints,
//! and the demo leaves no temp dir and no process behind, however it ends.
//! Each demo gets its own ports and its own `TMPDIR`, so the tests run in
//! parallel; every wait is bounded and polls.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, loopback, TestDir};

/// A scenario runs in well under a minute; this bounds a hung one.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

struct Demo {
    child: Child,
    /// Every line of its stdout so far.
    lines: Arc<Mutex<Vec<String>>>,
    tmp: TestDir,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let tmp = TestDir::new("demo");
        let listen = loopback(free_port());
        let admin = loopback(free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("demo")
            .args(["--listen", &listen.to_string()])
            .args(["--admin-http", &admin.to_string()])
            .args(args)
            .env("TMPDIR", tmp.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchyard demo");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Demo {
            child,
            lines,
            tmp,
            listen,
            admin,
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (bounded) for a line containing `needle` and returns it.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the demo exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} within {limit:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the demo to exit; kills it if it does not.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the demo did not exit within {limit:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// The demo removed its temp dir, and its proxy is gone: its ports are
    /// free again (the proxy is a child: a port still taken means it lives).
    fn assert_cleaned_up(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp.path())
            .expect("read TMPDIR")
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(left.is_empty(), "the demo left {left:?} behind");
        for addr in [self.listen, self.admin] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while TcpListener::bind(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{addr} is still taken after the demo exited"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One request with `Connection: close`: status, `x-switchyard-pool`, body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let pool = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-switchyard-pool: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, pool, body.to_string())
}

/// The address after `label` in a banner line such as `green http://ADDR/`.
fn addr_after(line: &str, label: &str) -> SocketAddr {
    let rest = &line[line.find(label).expect("label") + label.len()..];
    rest.trim_start()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {label:?} in {line:?}"))
}

#[test]
fn canary_rollback_scenario_narrates_the_guards_rollback_and_exits_0() {
    let mut demo = Demo::start(&["--scenario", "canary-rollback"]);
    let status = demo.wait_exit(SCENARIO_LIMIT);
    let out = demo.output();
    assert!(status.success(), "exit {status}:\n{out}");
    // The story, in order: canary start, step 2, green breaks, the guard
    // rolls back with its evidence, green ends at 0 %.
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{out}"))
    };
    let started = at("canary start green");
    let step2 = at("-> blue=50 green=50");
    let broke = at("/_demo/fail?percent=");
    let rollback = at("by guard: rollback (guard: ");
    assert!(
        started < step2 && step2 < broke && broke < rollback,
        "{out}"
    );
    // The guard's test and its evidence, read from `status`.
    assert!(out.contains("test      error_rate"), "{out}");
    assert!(out.contains("CUSUM     statistic"), "{out}");
    assert!(out.contains("ROLLED BACK by the guard"), "{out}");
    let rollback_line = out[rollback..].lines().next().unwrap();
    assert!(
        rollback_line.ends_with("blue=100 green=0"),
        "{rollback_line}"
    );
    // Every narrated line starts with its time, HH:MM:SS.mmm.
    for line in out.lines() {
        let clock = line.get(..12).unwrap_or("");
        assert!(
            clock.len() == 12 && clock.as_bytes()[2] == b':' && clock.as_bytes()[8] == b'.',
            "line without a timestamp: {line:?}"
        );
    }
    // The commands it shows run this binary, not cargo.
    assert!(out.contains(env!("CARGO_BIN_EXE_switchyard")), "{out}");
    assert!(!out.contains("cargo run"), "{out}");
    demo.assert_cleaned_up();
}

#[test]
fn canary_success_scenario_reaches_100_percent_and_exits_0() {
    let mut demo = Demo::start(&["--scenario", "canary-success"]);
    let status = demo.wait_exit(SCENARIO_LIMIT);
    let out = demo.output();
    assert!(status.success(), "exit {status}:\n{out}");
    assert!(out.contains("-> blue=50 green=50"), "{out}");
    assert!(out.contains("-> blue=0 green=100"), "{out}");
    assert!(out.contains("promoted to 100%"), "{out}");
    assert!(out.contains("PROMOTED"), "{out}");
    assert!(
        !out.contains("by guard"),
        "a healthy canary was rolled back:\n{out}"
    );
    demo.assert_cleaned_up();
}

/// The interactive demo: the origin commands it prints change what the
/// origin answers (through the proxy too); Ctrl-C removes the temp dir.
#[test]
fn origin_commands_change_the_answers_and_ctrl_c_cleans_up() {
    let mut demo = Demo::start(&["--no-traffic"]);
    let origins = demo.wait_line("origins ", Duration::from_secs(30));
    let green = addr_after(&origins, "green");
    let fail_cmd = demo.wait_line("/_demo/fail?percent=20", Duration::from_secs(5));
    assert!(fail_cmd.contains(&format!(
        "curl -X POST 'http://{green}/_demo/fail?percent=20'"
    )));
    demo.wait_line("following the proxy", Duration::from_secs(10));
    let out = demo.output();
    assert!(
        out.contains(&format!("{} ctl -s ", env!("CARGO_BIN_EXE_switchyard"))),
        "{out}"
    );
    assert!(!out.contains("cargo run"), "{out}");
    assert!(out.contains("traffic      none"), "{out}");

    let canary = "x-canary: true\r\n";
    let (status, pool, body) = http(demo.listen, "GET", "/", canary);
    assert_eq!(
        (status, pool.as_str(), body.as_str()),
        (200, "green", "green\n")
    );

    // 100 % failures: green answers 500, directly and through the proxy.
    let (status, _, body) = http(green, "POST", "/_demo/fail?percent=100", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("fail 100%"), "{body}");
    assert_eq!(http(green, "GET", "/", "").0, 500);
    let (status, pool, _) = http(demo.listen, "GET", "/", canary);
    assert_eq!((status, pool.as_str()), (500, "green"));

    // 20 %: exactly 4 of the next 20 answers fail.
    http(green, "POST", "/_demo/fail?percent=20", "");
    let failed = (0..20)
        .filter(|_| http(green, "GET", "/", "").0 == 500)
        .count();
    assert_eq!(failed, 4);

    // Latency: every answer waits at least that long.
    http(green, "POST", "/_demo/heal", "");
    http(green, "POST", "/_demo/latency?ms=300", "");
    let began = Instant::now();
    let (status, _, _) = http(demo.listen, "GET", "/", canary);
    assert_eq!(status, 200);
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "{:?}",
        began.elapsed()
    );

    // The health check fails on command.
    http(green, "POST", "/_demo/health?up=false", "");
    assert_eq!(http(green, "GET", "/health", "").0, 503);

    // Heal: all back to normal. A bad command says what is wrong.
    let (_, _, body) = http(green, "POST", "/_demo/heal", "");
    assert!(
        body.contains("fail 0%, latency 0 ms, health check up"),
        "{body}"
    );
    assert_eq!(http(green, "GET", "/health", "").0, 200);
    let (status, _, body) = http(green, "GET", "/_demo", "");
    assert_eq!(status, 200);
    assert!(body.contains("fail 0%"), "{body}");
    let (status, _, body) = http(green, "POST", "/_demo/fail?percent=200", "");
    assert_eq!(status, 400);
    assert!(body.contains("percent=200"), "{body}");

    demo.signal(libc::SIGINT);
    let status = demo.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", demo.output());
    demo.assert_cleaned_up();
}

/// The default demo sends its own traffic, and SIGTERM cleans up as well.
#[test]
fn demo_sends_its_own_traffic_and_sigterm_cleans_up() {
    let mut demo = Demo::start(&["--rate", "40"]);
    demo.wait_line("traffic      40 requests/s", Duration::from_secs(30));
    demo.wait_line("following the proxy", Duration::from_secs(10));
    // The proxy counts the demo's requests to blue: poll its metrics.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = http(demo.admin, "GET", "/status", "");
        let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let blue = status["pools"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == "blue"))
            .map(|p| p["window"]["requests"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        if blue >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no traffic of the demo's own: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    demo.signal(libc::SIGTERM);
    let status = demo.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}:\n{}", demo.output());
    demo.assert_cleaned_up();
}
