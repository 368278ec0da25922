//! Nothing lost across restarts: a canary run survives a graceful restart,
//! a `kill -9` and a binary upgrade, resumed at its step with the hold time
//! that was left; webhook events still queued at SIGTERM reach their
//! receiver before the process exits.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Blue serves; green is canaried in steps of 10 % (held `hold`), 50 %
/// (held an hour) and 100 %.
async fn canary_config(hold: &str) -> (Origin, Origin, String) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let text = format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
         [guard]\nmin_requests = 10\n\
         [canary]\nsteps = [{{ weight = 10, hold = \"{hold}\" }}, {{ weight = 50, hold = \"1h\" }}, {{ weight = 100 }}]\n",
        blue.addr(),
        green.addr()
    );
    (blue, green, text)
}

/// The canary part of `status`: (step, hold left in seconds).
async fn canary_of(proxy: &Proxy) -> Option<(u64, f64)> {
    let status = proxy.ctl("status").await;
    let canary = &status["canary"];
    Some((
        canary["step"].as_u64()?,
        canary["hold_remaining_s"].as_f64()?,
    ))
}

/// Waits (bounded) until the canary's first step has at most
/// `at_most_left` seconds of hold left; returns what is left.
async fn held_a_while(proxy: &Proxy, at_most_left: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = canary_of(proxy).await.map_or(f64::MAX, |(_, l)| l);
        if left <= at_most_left {
            return left;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never got to {at_most_left} s left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_survives_a_graceful_restart_with_the_hold_that_was_left() {
    let (_blue, _green, config) = canary_config("8s").await;
    let mut proxy = Proxy::start(&config).await;
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let left_before = held_a_while(&proxy, 6.0).await;

    proxy.signal("TERM");
    let exited = proxy.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{}", proxy.log());
    // Down for 3 s: that is not time the step was held.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let proxy = proxy.restart().await;

    let (step, left_after) = canary_of(&proxy)
        .await
        .unwrap_or_else(|| panic!("no canary after the restart:\n{}", proxy.log()));
    assert_eq!(step, 1, "resumed at its step");
    assert!(
        left_after <= left_before + 0.1 && left_after >= left_before - 2.0,
        "hold left {left_before:.2} s at SIGTERM, {left_after:.2} s after the restart \
         (the 3 s down must not count, the time served must)"
    );
    let status = proxy.ctl("status").await;
    assert_eq!(status["split"]["green"], 10.0, "{status}");
    assert_eq!(status["guard"]["watching"]["pool"], "green", "{status}");
    assert!(proxy
        .log()
        .contains("resumed the canary of green at step 1/3"));

    // It walks on by itself once the rest of the hold is served.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 2, stop.clone(), 100_000));
    let stepped = eventually(Duration::from_secs(20), || async {
        canary_of(&proxy).await.is_some_and(|(step, _)| step == 2)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        stepped,
        "the resumed canary did not step on:\n{}",
        proxy.log()
    );
    assert_eq!(proxy.ctl("status").await["split"]["green"], 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_survives_kill_9_and_a_paused_one_stays_paused() {
    let (_blue, _green, config) = canary_config("1h").await;
    let proxy = Proxy::start(&config).await;
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    assert_eq!(proxy.ctl("canary pause").await["ok"], true);
    let proxy = proxy.restart().await;
    let status = proxy.ctl("status").await;
    assert_eq!(status["canary"]["step"], 1, "{status}");
    assert_eq!(status["canary"]["paused"], true, "{status}");
    assert_eq!(status["split"]["green"], 10.0, "{status}");
    // The operator still drives it: resume, then abort, and the abort is
    // what the next start sees.
    assert_eq!(proxy.ctl("canary resume").await["ok"], true);
    assert_eq!(proxy.ctl("canary abort").await["ok"], true);
    let proxy = proxy.restart().await;
    let status = proxy.ctl("status").await;
    assert!(status["canary"].is_null(), "{status}");
    assert_eq!(status["split"]["green"], 0.0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_split_was_edited_while_down_is_not_resumed() {
    let (_blue, _green, config) = canary_config("1h").await;
    let proxy = Proxy::start(&config).await;
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let mut proxy = proxy;
    proxy.kill9();
    // The file's [split] changed while the proxy was down: it wins, and the
    // run it would contradict ends.
    proxy.write_config(&config.replace("blue = 100", "blue = 70\ngreen = 30"));
    let proxy = proxy.restart().await;
    let status = proxy.ctl("status").await;
    assert!(status["canary"].is_null(), "{status}");
    assert_eq!(status["split"]["green"], 30.0, "{status}");
    assert!(
        proxy
            .log()
            .contains("the saved canary of green is not resumed"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_survives_a_binary_upgrade() {
    let (_blue, _green, config) = canary_config("1h").await;
    let mut proxy = Proxy::start(&config).await;
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let left_before = held_a_while(&proxy, 3598.0).await;
    let old_pid = proxy.pid();
    proxy.signal("USR2");
    let new_pid = successor_pid(&proxy.socket(), old_pid).await;
    let exited = proxy.wait_exit(Duration::from_secs(30)).await;
    let after = canary_of(&proxy).await;
    let log = proxy.log();
    terminate(new_pid).await;
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{log}");
    let (step, left_after) = after.unwrap_or_else(|| panic!("no canary after the upgrade:\n{log}"));
    assert_eq!(step, 1);
    assert!(
        left_after <= left_before + 0.1,
        "the successor restarted the hold ({left_before:.1} s left before, {left_after:.1} s after)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_queued_at_sigterm_are_delivered_before_exit() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    // Each delivery takes 400 ms: four events are ~1.6 s of deliveries in
    // order, far longer than the drain of an idle proxy.
    let (hook, events) = slow_receiver(Duration::from_millis(400)).await;
    let mut proxy = Proxy::start_with(
        "grace_period = \"15s\"\n",
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
             [notify]\nwebhooks = [\"http://{hook}/events\"]\n",
            blue.addr(),
            green.addr()
        ),
    )
    .await;
    for command in ["split blue=90 green=10", "cutover green", "rollback deploy"] {
        assert_eq!(proxy.ctl(command).await["ok"], true, "{command}");
    }
    proxy.signal("TERM");
    let exited = proxy.wait_exit(Duration::from_secs(20)).await;
    let log = proxy.log();
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{log}");
    let kinds: Vec<String> = events
        .lock()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        kinds,
        ["start", "split", "cutover", "rollback"],
        "every queued event arrived before the exit:\n{log}"
    );
    assert!(
        log.contains("webhook delivery(ies) before exiting"),
        "{log}"
    );
}

/// Blue and green whose health checks take 300 ms to answer.
async fn slow_health_pools() -> (Origin, Origin, String) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    for o in [&blue, &green] {
        o.control().set_health_delay(Duration::from_millis(300));
    }
    let text = format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 50\ngreen = 50\n\
         [health]\ninterval = \"2s\"\ntimeout = \"1s\"\n",
        blue.addr(),
        green.addr()
    );
    (blue, green, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_the_port_opens_is_served_even_when_checks_are_slow() {
    let (_blue, _green, config) = slow_health_pools().await;
    for attempt in 1..=3 {
        let listen = loopback(free_port());
        let proxy = Proxy::start_unready(listen, &config).await;
        // The first moment the port accepts, one request.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let reply = loop {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                break get(listen, "/", &[]).await;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the port never opened"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let reply = reply.unwrap_or_else(|e| panic!("attempt {attempt}: {e}\n{}", proxy.log()));
        assert_eq!(
            reply.status,
            200,
            "attempt {attempt}: {}\n{}",
            reply.body,
            proxy.log()
        );
        assert!(proxy.log().contains("first health round done"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_with_slow_checks_answers_no_503() {
    let (_blue, _green, config) = slow_health_pools().await;
    let mut proxy = Proxy::start(&config).await;
    // A new connection per request, so the successor's accepts are tried
    // from the moment it has the listeners.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, listen) = (stop.clone(), proxy.listen);
        clients.spawn(async move {
            let mut results = Vec::new();
            while !stop.load(Ordering::Relaxed) && results.len() < 50_000 {
                results.push(get(listen, "/", &[]).await);
            }
            results
        });
    }
    let old_pid = proxy.pid();
    proxy.signal("USR2");
    let new_pid = successor_pid(&proxy.socket(), old_pid).await;
    let exited = proxy.wait_exit(Duration::from_secs(30)).await;
    // The successor alone serves for a moment after the old one is gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    while let Some(done) = clients.join_next().await {
        results.extend(done.expect("client"));
    }
    let log = proxy.log();
    terminate(new_pid).await;
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{log}");
    let unavailable = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|reply| reply.status == 503))
        .count();
    assert!(results.len() > 100, "only {} requests", results.len());
    assert_eq!(
        unavailable,
        0,
        "{unavailable} of {} requests answered 503 during the upgrade\n{log}",
        results.len()
    );
}

/// The `health` of backend `addr` in the first pool of `status`.
fn backend_state(status: &serde_json::Value, addr: std::net::SocketAddr) -> String {
    status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["backends"].as_array().cloned().unwrap_or_default())
        .find(|b| b["addr"] == addr.to_string())
        .and_then(|b| b["health"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_hands_the_health_verdicts_to_the_successor() {
    let (good, bad) = (origin("blue").await, origin("blue-bad").await);
    // Its health check passes, its requests fail: only passive ejection
    // keeps it out, and a successor checking afresh would let it back in.
    bad.control().set_fail_percent(100);
    let mut proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\", \"{}\"]\n[split]\nblue = 100\n\
         [health]\ninterval = \"500ms\"\ntimeout = \"200ms\"\neject_consecutive_failures = 3\neject_base_time = \"5m\"\n",
        good.addr(),
        bad.addr()
    ))
    .await;
    let ejected = eventually(Duration::from_secs(10), || async {
        let _ = get(proxy.listen, "/", &[]).await;
        backend_state(&proxy.ctl("status").await, bad.addr()) == "ejected"
    })
    .await;
    assert!(
        ejected,
        "the failing backend was never ejected:\n{}",
        proxy.log()
    );
    let old_pid = proxy.pid();
    proxy.signal("USR2");
    let new_pid = successor_pid(&proxy.socket(), old_pid).await;
    let status = proxy.ctl("status").await;
    let first = get(proxy.listen, "/", &[]).await;
    let log = proxy.log();
    let exited = proxy.wait_exit(Duration::from_secs(30)).await;
    terminate(new_pid).await;
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "{log}");
    assert_eq!(status["pid"], new_pid);
    assert_eq!(backend_state(&status, bad.addr()), "ejected", "{status}");
    assert_eq!(backend_state(&status, good.addr()), "up", "{status}");
    assert!(
        log.contains("took over the health verdicts of 2 backend(s)"),
        "{log}"
    );
    assert_eq!(first.map(|r| r.status).ok(), Some(200));
}
