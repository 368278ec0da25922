//! The control plane through real sockets: admin commands and their errors,
//! splits under load, live reloads, restarts, crash safety of the state
//! file, and a socket that shrugs off hostile input.

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn ok(answer: &Value) -> bool {
    answer["ok"] == Value::Bool(true)
}

fn error(answer: &Value) -> String {
    assert!(!ok(answer), "expected a refusal, got {answer}");
    answer["error"].as_str().unwrap_or_default().to_string()
}

async fn bodies(proxy: &Proxy, n: usize) -> (usize, usize) {
    let mut conn = Conn::open(proxy.listen).await.unwrap();
    let (mut blue, mut green) = (0, 0);
    for _ in 0..n {
        match conn.get("/", &[]).await.unwrap().body.as_str() {
            "blue\n" => blue += 1,
            "green\n" => green += 1,
            other => panic!("unexpected body {other:?}"),
        }
    }
    (blue, green)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_its_errors() {
    let (proxy, _blue, _green) = setup().await;

    let status = proxy.ctl("status").await;
    assert!(ok(&status));
    assert_eq!(status["revision"], 1);
    assert_eq!(status["split"]["blue"], 100.0);
    assert!(status["rollback_target"].is_null());

    // split, and its refusals
    let answer = proxy.ctl("split blue=90 green=10").await;
    assert!(ok(&answer), "{answer}");
    assert_eq!(answer["revision"], 2);
    assert!(error(&proxy.ctl("split blue=90 green=20").await).contains("sum to 110"));
    assert!(error(&proxy.ctl("split blue=90 purple=10").await).contains("no such pool \"purple\""));
    assert!(error(&proxy.ctl("split blue=ninety").await).contains("not a percentage"));
    assert!(error(&proxy.ctl("split").await).contains("POOL=PERCENT"));

    // cutover → rollback restores the split before the raise
    let answer = proxy.ctl("cutover green").await;
    assert_eq!(answer["split"]["green"], 100.0);
    assert!(error(&proxy.ctl("cutover purple").await).contains("no such pool"));
    let status = proxy.ctl("status").await;
    assert_eq!(status["rollback_target"]["split"]["green"], 10.0);
    let answer = proxy.ctl("rollback bad deploy").await;
    assert!(ok(&answer), "{answer}");
    assert_eq!(answer["split"]["blue"], 90.0);
    assert!(error(&proxy.ctl("rollback").await).contains("nothing to roll back to"));

    // drain / undrain by configured name
    let backend = proxy.ctl("status").await["pools"][0]["backends"][0]["addr"]
        .as_str()
        .unwrap()
        .to_string();
    // blue has traffic and no other backend: draining it needs --force.
    let last = proxy.ctl(&format!("drain blue {backend}")).await;
    assert_eq!(last["kind"], "last_backend", "{last}");
    assert!(ok(&proxy
        .ctl(&format!("drain --force blue {backend}"))
        .await));
    assert!(error(&proxy.ctl(&format!("drain blue {backend}")).await).contains("already drained"));
    assert_eq!(
        proxy.ctl("status").await["pools"][0]["backends"][0]["drained"],
        true
    );
    assert!(ok(&proxy.ctl(&format!("undrain blue {backend}")).await));
    assert!(error(&proxy.ctl(&format!("undrain blue {backend}")).await).contains("not drained"));
    assert!(error(&proxy.ctl("drain blue 127.0.0.1:1").await).contains("no backend"));
    assert!(error(&proxy.ctl("drain purple x").await).contains("no such pool"));

    // history and undo
    let history = proxy.ctl("history 3").await;
    let records = history["history"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2]["command"], format!("undrain blue {backend}"));
    assert_eq!(records[0]["command"], "rollback bad deploy");
    assert_eq!(records[0]["origin"], "admin");
    assert!(
        records[0]["uid"].is_u64(),
        "peer uid recorded: {}",
        records[0]
    );
    let answer = proxy.ctl("undo 3").await; // revision 3 = the cutover
    assert!(ok(&answer), "{answer}");
    assert_eq!(answer["split"]["green"], 100.0);
    assert!(error(&proxy.ctl("undo 999").await).contains("no revision 999"));
    assert!(error(&proxy.ctl("undo x").await).contains("not a revision"));

    // reload of an unchanged file, unknown commands
    let answer = proxy.ctl("reload").await;
    assert_eq!(answer["changed"], false, "{answer}");
    assert!(error(&proxy.ctl("frobnicate now").await).contains("unknown command"));

    // Every refusal names its kind next to the message.
    for (command, kind) in [
        ("frobnicate now", "bad_request"),
        ("split blue=90 purple=10", "no_such_pool"),
        ("split blue=90 green=20", "bad_split"),
        ("drain blue 127.0.0.1:1", "no_such_backend"),
        ("undo 999", "no_such_revision"),
        ("canary abort", "no_canary"),
        ("guard resume", "unchanged"),
    ] {
        let answer = proxy.ctl(command).await;
        assert_eq!(answer["kind"], kind, "{command}: {answer}");
    }

    // The audit log has one line per change, each with a revision.
    let audit = std::fs::read_to_string(proxy.dir.path().join("state/audit.log")).unwrap();
    let revisions: Vec<u64> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["revision"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(revisions, (1..=revisions.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_takes_effect_for_the_very_next_requests() {
    let (proxy, _blue, _green) = setup().await;
    assert_eq!(bodies(&proxy, 50).await, (50, 0));
    assert!(ok(&proxy.ctl("cutover green").await));
    assert_eq!(
        bodies(&proxy, 50).await,
        (0, 50),
        "no request after the answer went to blue"
    );
    assert!(ok(&proxy.ctl("rollback").await));
    assert_eq!(bodies(&proxy, 50).await, (50, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_split_changes_under_load_fail_no_request() {
    let (proxy, _blue, _green) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 8, stop.clone(), 2_000_000));

    let socket = proxy.socket();
    let changes = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut applied = 0;
        for i in 0..1000 {
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
            let command = if i % 2 == 0 {
                "split blue=10 green=90"
            } else {
                "split blue=90 green=10"
            };
            let answer = switchyard::protocol::wire::request(&socket, command).expect("socket");
            assert_eq!(answer["ok"], true, "{answer}");
            applied += 1;
        }
        applied
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    assert_eq!(changes, 1000, "all changes applied within the bound");
    assert!(
        results.len() > 1000,
        "load ran alongside: {} requests",
        results.len()
    );
    assert_eq!(failures(&results), Vec::<String>::new());
    assert_eq!(proxy.ctl("status").await["revision"], 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_rewrites_under_load_fail_no_request_and_end_on_the_last_valid_file() {
    let (proxy, blue, green) = setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 8, stop.clone(), 2_000_000));

    let mut last_valid = String::new();
    for i in 0..100 {
        // Half the files are invalid; the last one written is valid.
        let text = match i % 4 {
            0 => body(&blue, &green, "blue = 100"),
            1 => body(&blue, &green, "blue = 50\ngreen = 40"), // invalid: sums to 90
            2 => format!(
                "{}[guard]\nwindw = \"10s\"\n",
                body(&blue, &green, "blue = 20\ngreen = 80")
            ), // invalid key
            _ => body(&blue, &green, "blue = 50\ngreen = 50"),
        };
        if i % 4 == 0 || i % 4 == 3 {
            last_valid = text.clone();
        }
        proxy.write_config(&text);
        tokio::time::sleep(Duration::from_millis(30)).await; // pace the rewrites, not a sync point
    }
    // The last valid file had blue=50 green=50; wait until it is in force.
    assert_eq!(last_valid, body(&blue, &green, "blue = 50\ngreen = 50"));
    // The watcher picks it up by itself: no reload command is sent.
    let converged = eventually(Duration::from_secs(10), || async {
        proxy.ctl("status").await["split"]["green"] == 50.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    assert!(converged, "ends on the last valid file");
    assert_eq!(failures(&results), Vec::<String>::new());

    // An invalid file is rejected with its key paths and counted.
    proxy.write_config(&format!(
        "{}[guard]\nwindw = \"10s\"\n",
        body(&blue, &green, "blue = 100")
    ));
    let answer = proxy.ctl("reload").await;
    assert!(
        error(&answer).contains("guard.windw: unknown key (did you mean \"window\"?)"),
        "{answer}"
    );
    assert_eq!(
        proxy.ctl("status").await["split"]["green"],
        50.0,
        "running config stays"
    );
    let metrics = proxy.admin_get("/metrics").await.body;
    let errors_line = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_config_reloads_total{result=\"error\"}"))
        .unwrap();
    let count: f64 = errors_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{errors_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_pool_disappears_and_unchanged_pools_keep_their_stats() {
    let (blue, green, red) = (
        origin("blue").await,
        origin("green").await,
        origin("red").await,
    );
    let with_red = format!(
        "{}[pools.red]\nbackends = [\"{}\"]\n",
        body(&blue, &green, "blue = 100"),
        red.addr()
    );
    let proxy = Proxy::start(&with_red).await;
    bodies(&proxy, 30).await;
    let metrics = proxy.admin_get("/metrics").await.body;
    assert!(metrics.contains("pool=\"red\""));

    proxy.write_config(&body(&blue, &green, "blue = 100"));
    let gone = eventually(Duration::from_secs(10), || async {
        !proxy
            .admin_get("/metrics")
            .await
            .body
            .contains("pool=\"red\"")
    })
    .await;
    assert!(gone, "red's series are gone after the reload");
    let metrics = proxy.admin_get("/metrics").await.body;
    assert!(
        metrics.contains("switchyard_requests_total{pool=\"blue\",class=\"2xx\"} 30\n"),
        "blue kept its counts across the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_the_runtime_split_unless_the_file_split_changed() {
    let (proxy, blue, green) = setup().await;
    assert!(ok(&proxy.ctl("split blue=25 green=75").await));
    let proxy = proxy.restart().await;
    let status = proxy.ctl("status").await;
    assert_eq!(status["split"]["green"], 75.0, "runtime split restored");
    assert_eq!(status["revision"], 2, "revision restored");
    assert_eq!(status["rollback_target"]["split"]["blue"], 100.0);

    // Editing the file's [split] while it is down: the file wins.
    let mut proxy = proxy;
    proxy.kill9();
    proxy.write_config(&body(&blue, &green, "blue = 60\ngreen = 40"));
    let proxy = proxy.restart().await;
    let status = proxy.ctl("status").await;
    assert_eq!(status["split"]["green"], 40.0);
    assert_eq!(
        status["revision"], 3,
        "the file's change is a revision of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_survives_sigkill_during_changes() {
    let (mut proxy, _blue, _green) = setup().await;
    for round in 0..20u64 {
        let socket = proxy.socket();
        let stop = Arc::new(AtomicBool::new(false));
        let streamer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 10_000 {
                    let command = format!("split blue={} green={}", i % 100, 100 - i % 100);
                    if switchyard::protocol::wire::request(&socket, &command).is_err() {
                        break; // the process is gone
                    }
                    i += 1;
                }
            })
        };
        // Kill at a different moment each round.
        tokio::time::sleep(Duration::from_millis(20 + round * 11)).await;
        proxy.kill9();
        stop.store(true, Ordering::Relaxed);
        streamer.join().unwrap();

        let state = std::fs::read_to_string(proxy.dir.path().join("state/state.json")).unwrap();
        let parsed: Value = serde_json::from_str(&state)
            .unwrap_or_else(|e| panic!("round {round}: state.json unreadable ({e}): {state}"));
        assert!(parsed["revision"].as_u64().unwrap() >= 1);
        proxy = proxy.restart().await;
        let status = proxy.ctl("status").await;
        assert_eq!(
            status["revision"], parsed["revision"],
            "round {round}: restored what was on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_shrugs_off_hostile_input() {
    let (proxy, _blue, _green) = setup().await;
    let mode = std::fs::metadata(proxy.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {:o}", mode & 0o777);

    let socket = proxy.socket();
    let answers = tokio::task::spawn_blocking(move || {
        let exchange = |bytes: &[u8]| -> String {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(bytes).unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            line
        };
        vec![
            exchange(b"garbage in\n"),
            exchange(&[0xff, 0xfe, 0x00, 0x80, b'\n']),
            exchange(&[b'a'; 10_000]),
            exchange(b"split blue=1e309 green=0\n"),
            exchange(b"\x1b[31mstatus\n"),
        ]
    })
    .await
    .unwrap();
    let expect = [
        "unknown command",
        "not valid UTF-8",
        "longer than 4096",
        "not a percentage",
        "unknown command",
    ];
    for (answer, want) in answers.iter().zip(expect) {
        let value: Value =
            serde_json::from_str(answer).unwrap_or_else(|_| panic!("not JSON: {answer}"));
        assert_eq!(value["ok"], false);
        assert!(
            value["error"].as_str().unwrap().contains(want),
            "{answer} should say {want}"
        );
        assert_eq!(value["kind"], "bad_request", "{answer}");
    }
    // Many clients at once, and the proxy still serves.
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let socket = proxy.socket();
        clients.spawn_blocking(move || {
            switchyard::protocol::wire::request(&socket, "status").unwrap()
        });
    }
    while let Some(answer) = clients.join_next().await {
        assert_eq!(answer.unwrap()["ok"], true);
    }
    assert_eq!(bodies(&proxy, 10).await, (10, 0));
    assert_eq!(proxy.ctl("status").await["revision"], 1, "nothing changed");
}
