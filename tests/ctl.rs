//! `switchyard ctl`'s own contract, with the real binary: `help` offline,
//! `--json` anywhere on the line, a newline at the end of every output, the
//! exit codes (0 applied, 1 refused, 2 unreachable, 64 usage) and how the
//! socket is found (`-c FILE` must exist; the default file may be absent).

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use switchyard::protocol::command::USAGE;

/// `switchyard ARGS…` run in `dir` (for the default `conf/switchyard.toml`).
fn switchyard_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run switchyard");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_line(out: &str) -> Value {
    assert!(out.ends_with('\n'), "ends with a newline: {out:?}");
    assert_eq!(out.lines().count(), 1, "one JSON line: {out:?}");
    serde_json::from_str(out.trim_end()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn ends_with_newline(what: &str, text: &str) {
    assert!(
        !text.is_empty() && text.ends_with('\n'),
        "{what} ends with a newline: {text:?}"
    );
}

/// Each command of the protocol's vocabulary, as `USAGE` lists it.
fn vocabulary() -> Vec<&'static str> {
    USAGE
        .strip_prefix("commands: ")
        .unwrap()
        .split(" | ")
        .collect()
}

#[tokio::test]
async fn help_lists_the_vocabulary_without_a_server() {
    let dir = TestDir::new("ctl-help");
    let nowhere = dir.path().join("nowhere.sock");
    let nowhere = nowhere.to_str().unwrap();
    let missing = dir.path().join("missing.toml");
    for args in [
        vec!["help"],
        vec!["-s", nowhere, "help"],
        // Help is answered before the socket is looked for.
        vec!["-c", missing.to_str().unwrap(), "help"],
    ] {
        let (code, out, err) = ctl_cli(&args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(err.is_empty(), "nothing on stderr: {err}");
        ends_with_newline("help", &out);
        for command in vocabulary() {
            assert!(out.contains(command), "help lacks {command:?}:\n{out}");
        }
        assert!(out.contains("64 usage"), "the exit codes:\n{out}");
    }

    for args in [["--json", "help"], ["help", "--json"]] {
        let (code, out, err) = ctl_cli(&args).await;
        assert_eq!(code, 0, "{err}");
        let answer = json_line(&out);
        assert_eq!(answer["ok"], true);
        let commands: Vec<&str> = answer["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(commands, vocabulary());
    }

    // clap's --help points to `ctl help`, which works (above), and says the
    // exit codes.
    let (code, out, _) = ctl_cli(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("switchyard ctl help"), "{out}");
    assert!(out.contains("64 usage error"), "{out}");
    let (code, out, _) = switchyard_in(dir.path(), &["--version"]);
    assert_eq!(code, 0);
    ends_with_newline("--version", &out);
}

#[tokio::test]
async fn usage_errors_exit_64_unlike_an_unreachable_socket() {
    let dir = TestDir::new("ctl-usage");
    let nowhere = dir.path().join("nowhere.sock");
    let nowhere = nowhere.to_str().unwrap();
    for args in [
        vec![],                              // no command
        vec!["--bogus", "status"],           // unknown option before the command
        vec!["-s"],                          // an option without its value
        vec!["-s", nowhere, "--json"],       // options only
        vec!["-s", nowhere, "--", "--json"], // nothing left once --json is taken
    ] {
        let (code, out, err) = ctl_cli(&args).await;
        assert_eq!(code, 64, "{args:?} is a usage error: {err}");
        assert!(out.is_empty(), "{out}");
        ends_with_newline("a usage error", &err);
    }
    // The whole binary: no subcommand, an unknown one, a bad option.
    for args in [vec![], vec!["frobnicate"], vec!["check", "--bogus"]] {
        let (code, _, err) = switchyard_in(dir.path(), &args);
        assert_eq!(code, 64, "switchyard {args:?}: {err}");
    }

    // A command the server would refuse is refused here (1, as the server's
    // `bad_request`), not a usage error, and not unreachable.
    let (code, out, err) = ctl_cli(&["-s", nowhere, "status", "--bogus"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("refused") && err.contains("status: expected 0"),
        "{err}"
    );
    ends_with_newline("a refusal", &err);
    let (code, out, _) = ctl_cli(&["-s", nowhere, "undo", "x", "--json"]).await;
    assert_eq!(code, 1);
    assert_eq!(json_line(&out)["kind"], "bad_request");

    // Unreachable: 2, the message naming the socket, newline-ended.
    let (code, out, err) = ctl_cli(&["-s", nowhere, "status"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains(nowhere), "{err}");
    ends_with_newline("unreachable", &err);
}

#[tokio::test]
async fn a_config_named_with_c_must_exist_the_default_may_be_absent() {
    let dir = TestDir::new("ctl-config");
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let (code, out, err) = ctl_cli(&["-c", missing, "status"]).await;
    assert_eq!(code, 64, "{err}");
    assert!(out.is_empty());
    assert!(err.contains(missing), "names the file: {err}");
    assert!(!err.contains("/run/switchyard"), "no fallback: {err}");
    ends_with_newline("the -c error", &err);

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[admin\nsocket = \"x.sock\"\n").unwrap();
    let (code, _, err) = ctl_cli(&["-c", broken.to_str().unwrap(), "status"]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("broken.toml") && err.contains("TOML"), "{err}");

    // -s wins: -c is not read at all.
    let nowhere = dir.path().join("nowhere.sock");
    let (code, _, err) = ctl_cli(&["-s", nowhere.to_str().unwrap(), "-c", missing, "status"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nowhere.sock"), "{err}");

    // No -c and no conf/switchyard.toml: the fallback socket, as before.
    let (code, _, err) = switchyard_in(dir.path(), &["ctl", "status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/run/switchyard/admin.sock"), "{err}");

    // No -c, the default file present: its [admin].socket, relative to it.
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/switchyard.toml"),
        "[admin]\nsocket = \"here.sock\"\n",
    )
    .unwrap();
    let (code, _, err) = switchyard_in(dir.path(), &["ctl", "status"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("conf/here.sock"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_anywhere_on_the_line_and_every_output_ends_with_a_newline() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
        blue.addr(),
        green.addr()
    ))
    .await;
    let socket = proxy.socket();
    let socket = socket.to_str().unwrap();
    let config = proxy.config_path();
    let config = config.to_str().unwrap();

    // --force stays part of the command when --json follows it.
    let (code, out, err) = ctl_cli(&["-s", socket, "cutover", "--force", "green", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let answer = json_line(&out);
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["revision"], 2);
    // --json between the words, and a rollback reason kept whole.
    let (code, out, err) = ctl_cli(&["-c", config, "rollback", "bad", "--json", "deploy"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["revision"], 3);

    for args in [
        ["-s", socket, "history", "3", "--json"],
        ["-s", socket, "--json", "history", "3"],
    ] {
        let (code, out, err) = ctl_cli(&args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        let history = json_line(&out)["history"].clone();
        let commands: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["command"].as_str().unwrap())
            .collect();
        assert_eq!(
            commands[1..],
            ["cutover --force green", "rollback bad deploy"],
            "--force kept and --json taken out: {history}"
        );
    }

    // Human output, applied and read-only: newline-ended.
    for args in [
        vec!["-s", socket, "status"],
        vec!["-s", socket, "history", "2"],
        vec!["-s", socket, "split", "blue=50", "green=50"],
        vec!["-s", socket, "reload"],
        vec!["-s", socket, "status", "--json"],
    ] {
        let (code, out, err) = ctl_cli(&args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        ends_with_newline(&format!("{args:?}"), &out);
    }
    // Refused by the server: 1, newline-ended on stderr, or JSON on stdout.
    let (code, out, err) = ctl_cli(&["-s", socket, "cutover", "purple"]).await;
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("no such pool"), "{err}");
    ends_with_newline("a refusal", &err);
    let (code, out, _) = ctl_cli(&["-s", socket, "cutover", "purple", "--json"]).await;
    assert_eq!(code, 1);
    assert_eq!(json_line(&out)["ok"], false);
}
