//! The guard as an operator drives it: retries right after a rollback, a
//! manual command in the middle of a canary, a canary started from a split,
//! a failure long after the change, a starved canary, observe mode, and
//! commands that ask for what is already in force. Real origins, the real
//! binary, real requests on loopback.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pools(blue: &Origin, green: &Origin, split: &str) -> String {
    format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\n{split}\n",
        blue.addr(),
        green.addr()
    )
}

/// Sends about `per_second` GETs a second over one keep-alive connection
/// until `stop` is set (at most `max`), so a test controls the traffic
/// rate the guard sees.
fn paced(
    addr: SocketAddr,
    per_second: u64,
    stop: Arc<AtomicBool>,
    max: usize,
) -> tokio::task::JoinHandle<Vec<Result<Reply, String>>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut conn: Option<Conn> = None;
        let mut results = Vec::new();
        while !stop.load(Ordering::Relaxed) && results.len() < max {
            tick.tick().await;
            results.push(get_reusing(&mut conn, addr, "/").await);
        }
        results
    })
}

async fn wait_status(proxy: &Proxy, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = proxy.ctl("status").await;
        if check(&status) || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn history(answer: &Value) -> Vec<Value> {
    answer["history"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_retried_right_after_a_rollback_is_judged_on_its_own_requests() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "{}[guard]\nmin_requests = 20\n[canary]\nsteps = [{{ weight = 50, hold = \"1s\" }}, {{ weight = 100 }}]\n",
        pools(&blue, &green, "blue = 100")
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 2_000_000));
    green.control().set_fail_every(2);
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let rolled = wait_status(&proxy, Duration::from_secs(10), |s| {
        s["split"]["green"] == 0.0 && s["canary"].is_null()
    })
    .await;
    assert_eq!(
        rolled["split"]["green"], 0.0,
        "first run rolled back: {rolled}"
    );
    // Fixed at once, retried at once: well inside the 30 s window.
    green.control().set_fail_every(0);
    let retried = proxy.ctl("canary start green").await;
    assert_eq!(retried["ok"], true, "{retried}");
    let retry_revision = retried["revision"].as_u64().unwrap();
    let promoted = wait_status(&proxy, Duration::from_secs(15), |s| {
        s["split"]["green"] == 100.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(promoted["split"]["green"], 100.0, "{promoted}");
    let after: Vec<Value> = history(&proxy.ctl("history 10").await)
        .into_iter()
        .filter(|r| r["revision"].as_u64().unwrap() > retry_revision)
        .collect();
    assert!(
        after.iter().all(|r| r["origin"] != "guard"),
        "the retry was judged on the first run's failures: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_command_during_a_canary_ends_it() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let (hook, events) = receiver().await;
    let proxy = Proxy::start(&format!(
        "{}[guard]\nmin_requests = 5\n[canary]\nsteps = [{{ weight = 10, hold = \"1s\" }}, {{ weight = 100 }}]\n\
         [notify]\nwebhooks = [\"http://{hook}/events\"]\n",
        pools(&blue, &green, "blue = 100")
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 2, stop.clone(), 2_000_000));
    let before = proxy.ctl("status").await["revision"].as_u64().unwrap();
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let cut = proxy.ctl("cutover blue").await;
    assert_eq!(cut["ok"], true, "{cut}");
    assert!(
        cut["message"]
            .as_str()
            .unwrap()
            .contains("overridden by admin"),
        "{cut}"
    );
    // Long past the step's hold: the canary must not come back.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let status = proxy.ctl("status").await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(status["canary"].is_null(), "{status}");
    assert_eq!(status["split"]["green"], 0.0, "{status}");
    for command in ["canary promote", "canary resume"] {
        let refused = proxy.ctl(command).await;
        assert_eq!(refused["ok"], false, "{command}: {refused}");
        assert_eq!(refused["kind"], "no_canary", "{command}: {refused}");
    }
    // Asking for what is in force changes nothing and gets no revision.
    let revision = proxy.ctl("status").await["revision"].as_u64().unwrap();
    assert_eq!(revision, before + 2, "canary start and cutover only");
    for command in ["cutover blue", "split blue=100 green=0"] {
        let same = proxy.ctl(command).await;
        assert_eq!(same["ok"], true, "{same}");
        assert_eq!(
            same["revision"].as_u64(),
            Some(revision),
            "{command}: {same}"
        );
        assert!(
            same["message"].as_str().unwrap().starts_with("unchanged"),
            "{same}"
        );
    }
    assert_eq!(
        proxy.ctl("status").await["revision"].as_u64(),
        Some(revision)
    );
    let aborted = eventually(Duration::from_secs(5), || async {
        events.lock().iter().any(|e| e["event"] == "canary_aborted")
    })
    .await;
    let events = events.lock().clone();
    assert!(aborted, "no canary_aborted event: {events:?}");
    let event = events
        .iter()
        .find(|e| e["event"] == "canary_aborted")
        .unwrap();
    assert_eq!(event["pool"], "green");
    assert!(event["reason"]
        .as_str()
        .unwrap()
        .contains("overridden by admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_started_from_a_split_keeps_no_traffic() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let (hook, events) = receiver().await;
    let proxy = Proxy::start(&format!(
        "{}[guard]\nmin_requests = 20\n[canary]\nsteps = [{{ weight = 50, hold = \"30s\" }}, {{ weight = 100 }}]\n\
         [notify]\nwebhooks = [\"http://{hook}/events\"]\n",
        pools(&blue, &green, "blue = 90\ngreen = 10")
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 2_000_000));
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    green.control().set_fail_every(1);
    let status = wait_status(&proxy, Duration::from_secs(10), |s| s["canary"].is_null()).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        status["split"]["green"], 0.0,
        "the tripped pool keeps no share: {status}"
    );
    assert_eq!(status["split"]["blue"], 100.0, "{status}");
    let decision = &status["guard"]["last_decision"];
    assert_eq!(decision["action"], "rollback", "{status}");
    assert_eq!(decision["evidence"]["test"], "error_rate", "{decision}");
    let record = history(&proxy.ctl("history 1").await).remove(0);
    assert_eq!(record["origin"], "guard");
    // A manual rollback now has nothing to go back to (the guard used the
    // target), and never hands green traffic.
    let again = proxy.ctl("rollback").await;
    assert_eq!(again["ok"], false, "{again}");
    let metrics = proxy.admin_get("/metrics").await.body;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_rollbacks_total{reason=\"error_rate\"}"
        ),
        1.0
    );
    let seen = eventually(Duration::from_secs(5), || async {
        let e = events.lock();
        e.iter().any(|e| e["event"] == "rollback")
            && e.iter().any(|e| e["event"] == "canary_aborted")
    })
    .await;
    let events = events.lock().clone();
    assert!(seen, "rollback and canary_aborted: {events:?}");
    let rollback = events.iter().find(|e| e["event"] == "rollback").unwrap();
    assert_eq!(rollback["pool"], "green", "{rollback}");
    let guard = &rollback["guard"];
    assert_eq!(guard["test"], "error_rate", "{rollback}");
    assert!(guard["marked"].as_u64().unwrap() > 0, "{rollback}");
    assert!(guard["statistic"].as_f64().unwrap() >= guard["bound"].as_f64().unwrap());
    assert_eq!(guard["limit"].as_f64(), Some(0.05));
    assert!(guard["estimate_low"].as_f64().unwrap() > 0.05, "{rollback}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_long_after_the_cutover_is_caught_as_fast_as_one_at_it() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "{}[guard]\nwindow = \"30s\"\nmin_requests = 50\nmax_error_rate = 5.0\n",
        pools(&blue, &green, "blue = 100")
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = paced(proxy.listen, 100, stop.clone(), 5_000);
    assert_eq!(proxy.ctl("cutover green").await["ok"], true);
    // Eight healthy seconds at 100 req/s first: 800 good requests.
    tokio::time::sleep(Duration::from_secs(8)).await;
    green.control().set_fail_every(5);
    let status = wait_status(&proxy, Duration::from_secs(10), |s| {
        s["split"]["green"] == 0.0
    })
    .await;
    let rolled_back = Instant::now();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(status["split"]["green"], 0.0, "{status}");
    let first = green.control().first_failure().expect("green failed");
    let took = rolled_back.saturating_duration_since(first);
    eprintln!("rolled back {took:?} after the first failure, 8 s after the cutover, 100 req/s, 20 % errors");
    assert!(took <= Duration::from_millis(1_500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_canary_pauses_and_says_what_it_waits_for() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "{}[guard]\nmin_requests = 20\n[canary]\nmax_step_wait = \"3s\"\nsteps = [{{ weight = 10, hold = \"1s\" }}, {{ weight = 100 }}]\n",
        pools(&blue, &green, "blue = 100")
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    // 25 req/s: the 10 % step sees about 2.5 a second, 20 take 8 s.
    let load = paced(proxy.listen, 25, stop.clone(), 1_000);
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let waiting = wait_status(&proxy, Duration::from_secs(3), |s| {
        s["canary"]["waiting_for"]
            .as_str()
            .is_some_and(|w| w.contains("of 20 requests"))
    })
    .await;
    assert!(
        waiting["canary"]["waiting_for"]
            .as_str()
            .unwrap_or("")
            .contains("of 20 requests"),
        "{waiting}"
    );
    let stalled = wait_status(&proxy, Duration::from_secs(8), |s| {
        s["canary"]["paused"] == true
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(stalled["canary"]["paused"], true, "{stalled}");
    assert_eq!(
        stalled["split"]["green"], 10.0,
        "a stall keeps the step: {stalled}"
    );
    let record = history(&proxy.ctl("history 1").await).remove(0);
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("stalled at step 1/2"), "{reason}");
    assert!(reason.contains("max_step_wait"), "{reason}");
    assert_eq!(proxy.ctl("canary resume").await["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_says_what_it_would_do_and_changes_nothing() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "{}[guard]\nmode = \"observe\"\nmin_requests = 20\n",
        pools(&blue, &green, "blue = 100")
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 2, stop.clone(), 2_000_000));
    assert_eq!(proxy.ctl("cutover green").await["ok"], true);
    green.control().set_fail_every(2);
    let status = wait_status(&proxy, Duration::from_secs(10), |s| {
        s["guard"]["last_decision"]["action"] == "guard_would_rollback"
    })
    .await;
    assert_eq!(status["guard"]["mode"], "observe", "{status}");
    assert_eq!(
        status["guard"]["last_decision"]["action"], "guard_would_rollback",
        "{status}"
    );
    let evidence = proxy.admin_get("/metrics").await.body;
    assert!(
        metric(
            &evidence,
            "switchyard_guard_evidence{pool=\"green\",test=\"error_rate\"}"
        ) >= 1.0,
        "{evidence}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = proxy.ctl("status").await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        later["split"]["green"], 100.0,
        "observe changes nothing: {later}"
    );
    let record = history(&proxy.ctl("history 1").await).remove(0);
    assert_ne!(record["origin"], "guard");
    let metrics = proxy.admin_get("/metrics").await.body;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_rollbacks_total{reason=\"would_error_rate\"}"
        ),
        1.0,
        "reported once per watch"
    );
}
