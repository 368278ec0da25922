//! The control plane as an operator meets it: the `switchyard ctl` binary
//! (tables, `--json`, exit codes, socket from the config), reloads through
//! a Kubernetes-style ConfigMap symlink swap and a symlinked config file,
//! and SIGHUP.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn body(blue: &Origin, green: &Origin, split: &str) -> String {
    format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\n{split}\n",
        blue.addr(),
        green.addr()
    )
}

async fn setup() -> (Proxy, Origin, Origin) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&body(&blue, &green, "blue = 100")).await;
    (proxy, blue, green)
}

async fn reloads(proxy: &Proxy, result: &str) -> f64 {
    let text = proxy.admin_get("/metrics").await.body;
    metric(
        &text,
        &format!("switchyard_config_reloads_total{{result=\"{result}\"}}"),
    )
}

async fn green_share(proxy: &Proxy) -> f64 {
    proxy.ctl("status").await["split"]["green"]
        .as_f64()
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_prints_tables_or_json_and_exits_0_1_2() {
    let (proxy, _blue, _green) = setup().await;
    let config = proxy.config_path();
    let config = config.to_str().unwrap();
    let socket = proxy.socket();
    let socket = socket.to_str().unwrap();

    // The socket comes from the config's [admin].socket.
    let (code, out, err) = ctl_cli(&["-c", config, "split", "blue=90", "green=10"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("revision 2") && out.contains("blue=90 green=10"),
        "{out}"
    );

    let (code, out, err) = ctl_cli(&["-c", config, "status"]).await;
    assert_eq!(code, 0, "{err}");
    for want in [
        "revision 2",
        "split blue=90 green=10",
        "POOL",
        "REQUESTS",
        "P95",
    ] {
        assert!(out.contains(want), "status table lacks {want:?}:\n{out}");
    }
    assert!(out.contains("rollback target: blue=100"), "{out}");
    assert!(
        out.contains("healthy"),
        "backends with their health:\n{out}"
    );

    let (code, out, _) = ctl_cli(&["-s", socket, "--json", "status"]).await;
    assert_eq!(code, 0);
    let answer: Value = serde_json::from_str(out.trim()).expect("--json prints one JSON line");
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["split"]["green"], 10.0);

    let (code, out, err) = ctl_cli(&["-s", socket, "history"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("REV") && out.contains("split blue=90 green=10"),
        "{out}"
    );
    assert!(out.contains("admin:"), "origin with the peer uid:\n{out}");

    // Refused: exit 1, the reason on stderr; with --json the answer on stdout.
    let (code, _, err) = ctl_cli(&["-s", socket, "split", "blue=90", "green=20"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("refused") && err.contains("sum to 110"),
        "{err}"
    );
    let (code, out, _) = ctl_cli(&["-s", socket, "--json", "cutover", "purple"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["ok"],
        false
    );
    let (code, _, err) = ctl_cli(&["-s", socket, "status\nsplit blue=0 green=100"]).await;
    assert_eq!(
        code, 1,
        "a second command smuggled in a line break is refused"
    );
    assert!(err.contains("single line"), "{err}");

    // Unreachable: exit 2, naming the path.
    let missing = proxy.dir.path().join("nowhere.sock");
    let (code, _, err) = ctl_cli(&["-s", missing.to_str().unwrap(), "status"]).await;
    assert_eq!(code, 2);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");

    assert_eq!(
        proxy.ctl("status").await["revision"],
        2,
        "refusals changed nothing"
    );
}

#[tokio::test]
async fn a_malformed_command_is_refused_without_a_server() {
    let dir = TestDir::new("ctl-local");
    let missing = dir.path().join("nowhere.sock");
    let missing = missing.to_str().unwrap();
    let (code, _, err) = ctl_cli(&["-s", missing, "split", "blue=ninety"]).await;
    assert_eq!(code, 1, "refused, not unreachable: {err}");
    assert!(
        err.contains("refused") && err.contains("\"ninety\" is not a percentage"),
        "{err}"
    );
    let (code, out, _) = ctl_cli(&["-s", missing, "--json", "frobnicate"]).await;
    assert_eq!(code, 1);
    let answer: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["kind"], "bad_request");
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
}

/// Lays the config out the way a Kubernetes ConfigMap volume does:
/// `switchyard.toml -> ..data/switchyard.toml`, `..data -> ..vN`.
fn configmap_version(dir: &Path, version: u32, text: &str) {
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("switchyard.toml"), text).unwrap();
    let temp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(format!("..v{version}"), &temp).unwrap();
    std::fs::rename(&temp, dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_reloaded() {
    let (proxy, blue, green) = setup().await;
    let dir = proxy.dir.path();
    let before = reloads(&proxy, "ok").await;
    configmap_version(
        dir,
        1,
        &proxy.config_text(&body(&blue, &green, "blue = 100")),
    );
    let link = dir.join("switchyard.toml.link");
    std::os::unix::fs::symlink("..data/switchyard.toml", &link).unwrap();
    std::fs::rename(&link, proxy.config_path()).unwrap();
    // Same content: a reload that changes nothing. Wait for it so the swap
    // below is seen through `..data` alone.
    let settled = eventually(Duration::from_secs(10), || async {
        reloads(&proxy, "ok").await > before
    })
    .await;
    assert!(settled, "the switch to a symlinked config was seen");
    assert_eq!(proxy.ctl("status").await["revision"], 1);

    configmap_version(
        dir,
        2,
        &proxy.config_text(&body(&blue, &green, "green = 100")),
    );
    let swapped = eventually(Duration::from_secs(10), || async {
        green_share(&proxy).await == 100.0
    })
    .await;
    assert!(swapped, "the ..data swap was reloaded:\n{}", proxy.log());
    let history = proxy.ctl("history 1").await;
    assert_eq!(history["history"][0]["origin"], "file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_a_symlinked_config_s_target_are_reloaded() {
    let (proxy, blue, green) = setup().await;
    let elsewhere = proxy.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let real = elsewhere.join("real.toml");
    std::fs::write(&real, proxy.config_text(&body(&blue, &green, "blue = 100"))).unwrap();
    let before = reloads(&proxy, "ok").await;
    let link = proxy.dir.path().join("switchyard.toml.link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::fs::rename(&link, proxy.config_path()).unwrap();
    let followed = eventually(Duration::from_secs(10), || async {
        reloads(&proxy, "ok").await > before
    })
    .await;
    assert!(followed, "the switch to a symlink was seen");

    // An in-place edit of the target touches nothing in the link's directory.
    std::fs::write(
        &real,
        proxy.config_text(&body(&blue, &green, "blue = 40\ngreen = 60")),
    )
    .unwrap();
    let edited = eventually(Duration::from_secs(10), || async {
        green_share(&proxy).await == 60.0
    })
    .await;
    assert!(edited, "the target's edit was reloaded:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_an_invalid_file_keeps_the_running_config() {
    let (mut proxy, blue, green) = setup().await;
    // The watcher sees the broken file first: counted, nothing changes.
    proxy.write_config(&format!(
        "{}[split]\nblue = 50\n",
        body(&blue, &green, "blue = 100")
    ));
    let rejected = eventually(Duration::from_secs(10), || async {
        reloads(&proxy, "error").await >= 1.0
    })
    .await;
    assert!(rejected);

    let signal = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill")
            .success()
    };
    assert!(signal(proxy.pid()));
    let again = eventually(Duration::from_secs(10), || async {
        reloads(&proxy, "error").await >= 2.0
    })
    .await;
    assert!(again, "SIGHUP re-read the file:\n{}", proxy.log());
    assert!(proxy.is_running(), "SIGHUP does not end the process");
    assert!(proxy.log().contains("rejected, the running config stays"));
    let status = proxy.ctl("status").await;
    assert_eq!(status["revision"], 1, "the running config stays");
    assert_eq!(status["split"]["blue"], 100.0);
    let answer = proxy.ctl("reload").await;
    assert_eq!(answer["ok"], false);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("running config stays"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_what_changed_in_its_answer_and_the_audit_log() {
    let (proxy, blue, green) = setup().await;
    let extra = origin("green-2").await;
    // Written in place (the watcher may reload it first; either way the
    // audit record of that reload says what changed).
    proxy.write_config(&format!(
        "[pools.blue]\nbackends = [{{ addr = \"{}\", weight = 3 }}]\n[pools.green]\nbackends = [\"{}\", \"{}\"]\n\
         [split]\nblue = 100\n[guard]\nmax_error_rate = 2.0\n",
        blue.addr(),
        green.addr(),
        extra.addr()
    ));
    let recorded = eventually(Duration::from_secs(10), || async {
        proxy.ctl("history 1").await["history"][0]["command"] == "reload"
    })
    .await;
    assert!(recorded, "{}", proxy.log());
    let record = &proxy.ctl("history 1").await["history"][0];
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("config reloaded (")
            && reason.contains(&format!("green: backends added: {}", extra.addr()))
            && reason.contains(&format!("blue: weight of {} 1 -> 3", blue.addr()))
            && reason.contains("[guard] changed"),
        "{reason}"
    );
    // Nothing left to apply: the answer says so, and not "changed".
    let answer = proxy.ctl("reload").await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["message"], "config unchanged");
}
