//! `switchyard check` as a user runs it: exit codes and the exact messages.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::TestDir;

fn check(text: &str) -> (i32, String, String) {
    let dir = TestDir::new("check");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run switchyard check");
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "FILE");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn a_valid_file_exits_0_and_says_so() {
    let (code, stdout, stderr) = check(
        "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.green]\nbackends = [\"127.0.0.1:9002\"]\n[split]\nblue = 90\ngreen = 10\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "FILE: configuration is valid (2 pools, split blue=90 green=10)\n"
    );
}

#[test]
fn every_error_is_printed_with_its_key_path_and_exit_1() {
    let (code, stdout, stderr) = check(
        "[server]\nthreds = 4\n[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.green]\nbackends = [\"127.0.0.1:9002\", \"x:y\"]\n\
         [split]\nblue = 80\ngreen = 10\n[guard]\nmax_eror_rate = 5\n",
    );
    assert_eq!(code, 1);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "FILE: configuration is invalid (4 errors):\n\
         server.threds: unknown key (did you mean \"threads\"?)\n\
         pools.green.backends[1]: invalid address \"x:y\"\n\
         split: shares sum to 90, must be 100\n\
         guard.max_eror_rate: unknown key (did you mean \"max_error_rate\"?)\n"
    );
}

#[test]
fn a_missing_file_is_one_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c", "/nonexistent/switchyard.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "/nonexistent/switchyard.toml: configuration is invalid (1 error):\n\
         cannot read \"/nonexistent/switchyard.toml\": No such file or directory (os error 2)\n"
    );
}

#[test]
fn the_shipped_example_config_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/conf/switchyard.toml"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `127.a.b.c:80` for each `i` below 2^24: distinct IP backends.
fn nth_backend(i: usize) -> String {
    format!("127.{}.{}.{}:80", i >> 16 & 255, i >> 8 & 255, i & 255)
}

/// Like [`check`], but the run is killed (and the test fails) if it takes
/// longer than `limit`: a bound on a wait, not a measurement.
fn check_within(text: &str, limit: Duration) -> (i32, String, String) {
    let dir = TestDir::new("check-big");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run switchyard check");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait for check").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchyard check did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("check output");
    let name = path.display().to_string();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&name, "FILE"),
        String::from_utf8_lossy(&out.stderr).replace(&name, "FILE"),
    )
}

/// A pool of 100 000 backends: each one used to be compared with every
/// earlier one to find duplicates (quadratic: minutes in a debug build,
/// past the generous limit here). Every duplicate is still found, at its
/// own index, whether it repeats the first, a middle or the last backend.
#[test]
fn duplicates_are_found_among_a_hundred_thousand_backends() {
    const N: usize = 100_000;
    let config = |extra: &[usize]| {
        let mut text = String::from("[pools.blue]\nbackends = [\n");
        for i in (0..N).chain(extra.iter().copied()) {
            text.push_str(&format!("  \"{}\",\n", nth_backend(i)));
        }
        text.push_str("]\n");
        text
    };
    let limit = Duration::from_secs(60);

    let (code, stdout, stderr) = check_within(&config(&[]), limit);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "FILE: configuration is valid (1 pools, split blue=100)\n"
    );

    let (code, _, stderr) = check_within(&config(&[0, N / 2, N - 1]), limit);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "FILE: configuration is invalid (3 errors):\n\
             pools.blue.backends[{N}]: \"127.0.0.0:80\" is listed twice in this pool\n\
             pools.blue.backends[{}]: \"{}\" is listed twice in this pool\n\
             pools.blue.backends[{}]: \"{}\" is listed twice in this pool\n",
            N + 1,
            nth_backend(N / 2),
            N + 2,
            nth_backend(N - 1),
        )
    );
}
