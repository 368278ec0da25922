//! `switchyard check` as a user runs it: exit codes and the exact messages.

use std::process::Command;

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
