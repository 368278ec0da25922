//! A second instance started by mistake with addresses the first one
//! holds: it exits at once with one clear line, and the first one and its
//! state are untouched.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `switchyard run -c FILE` and waits (bounded) for it to exit:
/// (exit code, stderr, how long it ran).
fn run_second(config: &std::path::Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .arg("-c")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchyard");
    let deadline = started + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr, elapsed)
}

fn assert_one_clear_line(code: Option<i32>, stderr: &str, elapsed: Duration, names: &str) {
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(
        elapsed < Duration::from_secs(2),
        "took {elapsed:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(names), "{stderr}");
    assert!(stderr.contains("another switchyard"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_addresses_exits_at_once() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let body = format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
        blue.addr(),
        green.addr()
    );
    let first = Proxy::start(&body).await;
    assert_eq!(first.ctl("split blue=90 green=10").await["ok"], true);
    let before = first.ctl("status").await;

    // The very same file: the proxy address is the first thing it finds taken.
    let (code, stderr, elapsed) = tokio::task::block_in_place(|| run_second(&first.config_path()));
    assert_one_clear_line(
        code,
        &stderr,
        elapsed,
        &format!("server.listen: cannot listen on {}", first.listen),
    );

    // Another proxy port and state dir, the same admin HTTP address.
    let dir = TestDir::new("second");
    let text = std::fs::read_to_string(first.config_path())
        .unwrap()
        .replace(
            &first.listen.to_string(),
            &loopback(free_port()).to_string(),
        )
        .replace(
            &first.dir.path().display().to_string(),
            &dir.path().display().to_string(),
        );
    let second = dir.path().join("switchyard.toml");
    std::fs::write(&second, text).unwrap();
    let (code, stderr, elapsed) = tokio::task::block_in_place(|| run_second(&second));
    assert_one_clear_line(
        code,
        &stderr,
        elapsed,
        &format!("admin.http: cannot listen on {}", first.admin),
    );

    // The first instance still answers alone, with its state unchanged.
    let after = first.ctl("status").await;
    assert_eq!(after["pid"], before["pid"]);
    assert_eq!(after["revision"], before["revision"]);
    for _ in 0..5 {
        let status = first.admin_get("/status").await;
        assert_eq!(status.status, 200);
        let pid: serde_json::Value = serde_json::from_str(&status.body).unwrap();
        assert_eq!(pid["pid"], before["pid"], "only the first process answers");
    }
    assert_eq!(get(first.listen, "/", &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_port_held_by_any_other_process_is_a_start_up_error() {
    // Not a switchyard: any process. Before, the proxy retried pingora's
    // bind for ~30 s (and `/ready` had to tell its own listener from the
    // other process's); now it says so and stops at once.
    let holder = std::net::TcpListener::bind(loopback(free_port())).expect("hold a port");
    let listen = holder.local_addr().expect("held address");
    let dir = TestDir::new("held");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"{listen}\"]\n[admin]\nsocket = \"{d}/admin.sock\"\nhttp = \"{admin}\"\nstate_dir = \"{d}/state\"\n\
             [pools.blue]\nbackends = [\"127.0.0.1:9\"]\n[split]\nblue = 100\n",
            d = dir.path().display(),
            admin = loopback(free_port()),
        ),
    )
    .unwrap();
    let (code, stderr, elapsed) = tokio::task::block_in_place(|| run_second(&config));
    assert_one_clear_line(
        code,
        &stderr,
        elapsed,
        &format!("server.listen: cannot listen on {listen}"),
    );
    assert!(
        !dir.path().join("state").join("state.json").exists(),
        "nothing was written before the check"
    );
    drop(holder);
}
