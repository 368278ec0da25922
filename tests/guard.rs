//! The guard end to end: a failing or slow new pool is rolled back by
//! itself, a healthy canary walks to 100 %, healthy traffic is left alone,
//! and webhooks report every change in order without slowing anything.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn pools(blue: &Origin, green: &Origin) -> String {
    format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
        blue.addr(),
        green.addr()
    )
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls status until green's share is `share`; the instant it was seen.
async fn wait_green_share(proxy: &Proxy, share: f64, within: Duration) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if proxy.ctl("status").await["split"]["green"] == share {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_to_a_failing_pool_is_rolled_back_within_a_second() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "{}[guard]\nwindow = \"30s\"\nmin_requests = 50\nmax_error_rate = 5.0\n",
        pools(&blue, &green)
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 1_000_000));
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(proxy.ctl("cutover green").await["ok"], true);
    green.control().set_fail_every(5); // the new version fails 20 % of requests
    let rolled_back = wait_green_share(&proxy, 0.0, Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    let rolled_back = rolled_back.expect("rolled back within 10 s");
    let first_failure = green.control().first_failure().expect("green failed");
    let detection = rolled_back.saturating_duration_since(first_failure);
    eprintln!(
        "rolled back {detection:?} after green's first failure ({} requests in the run)",
        results.len()
    );
    assert!(
        detection <= Duration::from_secs(3),
        "detection took {detection:?}"
    );

    let record = &proxy.ctl("history 1").await["history"][0];
    assert_eq!(record["origin"], "guard");
    let reason = record["reason"].as_str().unwrap();
    // The sequential test's explanation: counts, estimate, limit, statistic.
    assert!(reason.contains("error_rate of pool green"), "{reason}");
    assert!(reason.contains("requests failed"), "{reason}");
    assert!(reason.contains("limit 5.00%"), "{reason}");
    assert!(reason.contains("CUSUM statistic"), "{reason}");
    let metrics = proxy.admin_get("/metrics").await.body;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_rollbacks_total{reason=\"error_rate\"}"
        ),
        1.0
    );
    // No re-promotion: green stays at 0 once the guard has spoken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.ctl("status").await["split"]["green"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p95_regression_is_rolled_back() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    blue.control().set_delay(Duration::from_millis(5));
    green.control().set_delay(Duration::from_millis(800));
    let proxy = Proxy::start(&format!(
        "{}[guard]\nwindow = \"10s\"\nmin_requests = 20\nmax_p95 = \"500ms\"\n",
        pools(&blue, &green)
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 32, stop.clone(), 1_000_000));
    assert_eq!(proxy.ctl("cutover green").await["ok"], true);
    let rolled_back = wait_green_share(&proxy, 0.0, Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    assert!(rolled_back.is_some(), "rolled back on p95");
    assert_eq!(
        failures(&results),
        Vec::<String>::new(),
        "slow is not failed"
    );
    let record = &proxy.ctl("history 1").await["history"][0];
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("p95 of pool green"),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_every_step_to_100_percent() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "{}[guard]\nmin_requests = 20\n[canary]\nsteps = [{{ weight = 10, hold = \"1s\" }}, {{ weight = 50, hold = \"1s\" }}, {{ weight = 100 }}]\n",
        pools(&blue, &green)
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 1_000_000));
    let started = proxy.ctl("canary start green").await;
    assert_eq!(started["ok"], true, "{started}");
    assert_eq!(started["split"]["green"], 10.0);
    let status = proxy.ctl("status").await;
    assert_eq!(status["rollback_target"]["split"]["blue"], 100.0);
    assert_eq!(status["canary"]["step"], 1);
    assert_eq!(status["canary"]["steps"], 3);
    assert!(status["guard"]["watching"]["pool"] == "green");

    let promoted = wait_green_share(&proxy, 100.0, Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    assert!(promoted.is_some(), "canary reached 100 %");
    assert_eq!(failures(&results), Vec::<String>::new());
    let history = proxy.ctl("history 3").await;
    let reasons: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("step 1/3 at 10%"), "{reasons:?}");
    assert!(reasons[1].contains("step 2/3 at 50%"), "{reasons:?}");
    assert!(reasons[2].contains("promoted to 100%"), "{reasons:?}");
    assert!(
        proxy.ctl("status").await["canary"].is_null(),
        "the run is over"
    );
    // A rollback now still returns to the split before the canary began.
    let back = proxy.ctl("rollback").await;
    assert_eq!(back["split"]["blue"], 100.0, "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_healthy_traffic_cause_no_rollback() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    green.control().set_delay(Duration::from_millis(2));
    let proxy = Proxy::start(&format!(
        "{}[guard]\nwindow = \"10s\"\nmin_requests = 50\nmax_error_rate = 1.0\nmax_p95 = \"250ms\"\n",
        pools(&blue, &green)
    ))
    .await;
    assert_eq!(proxy.ctl("cutover green").await["ok"], true);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 2_000_000));
    let mut verdicts = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let status = proxy.ctl("status").await;
        assert_eq!(
            status["split"]["green"], 100.0,
            "rolled back healthy traffic: {status}"
        );
        if status["guard"]["verdict"]["verdict"] == "pass" {
            verdicts += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();
    assert_eq!(failures(&results), Vec::<String>::new());
    assert!(
        verdicts > 50,
        "the guard was judging (and passing) all along: {verdicts}"
    );
    let metrics = proxy.admin_get("/metrics").await.body;
    assert!(
        !metrics.contains("switchyard_rollbacks_total{"),
        "no rollback counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_in_order_and_a_hanging_receiver_slows_nothing() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let (hook, events) = receiver().await;
    // Accepts connections and never answers.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    let proxy = Proxy::start(&format!(
        "{}[notify]\nwebhooks = [\"http://{hanging_addr}/stuck\", \"http://{hook}/deploy-events\"]\ntimeout = \"2s\"\nretry_for = \"5s\"\n",
        pools(&blue, &green)
    ))
    .await;
    for command in [
        "split blue=90 green=10",
        "cutover green",
        "rollback smoke test",
    ] {
        let started = Instant::now();
        assert_eq!(proxy.ctl(command).await["ok"], true);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{command} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        get(proxy.listen, "/", &[]).await.unwrap().status,
        200,
        "traffic unaffected"
    );
    let all_seen = eventually(Duration::from_secs(10), || async {
        events.lock().len() >= 4
    })
    .await;
    assert!(all_seen, "events: {:?}", events.lock());
    let events = events.lock().clone();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "split", "cutover", "rollback"]);
    let revisions: Vec<u64> = events
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions, [1, 2, 3, 4]);
    assert_eq!(events[3]["reason"], "smoke test");
    assert_eq!(events[3]["origin"], "admin");
    assert_eq!(events[2]["split"]["green"], 100.0);
    assert!(events[0]["time"].as_str().unwrap().ends_with('Z'));
    drop(hanging);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_first_step_keeps_the_share_is_still_watched_and_walks_on() {
    let (blue, green) = (origin("blue").await, origin("green").await);
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 90\ngreen = 10\n\
         [guard]\nmin_requests = 20\n[canary]\nsteps = [{{ weight = 10, hold = \"1s\" }}, {{ weight = 100 }}]\n",
        blue.addr(),
        green.addr()
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 1_000_000));
    assert_eq!(proxy.ctl("canary start green").await["ok"], true);
    let status = proxy.ctl("status").await;
    assert_eq!(status["guard"]["watching"]["pool"], "green", "{status}");
    assert_eq!(status["rollback_target"]["split"]["green"], 10.0);
    let promoted = wait_green_share(&proxy, 100.0, Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        promoted.is_some(),
        "the canary walked on from a step that kept the share"
    );
}
