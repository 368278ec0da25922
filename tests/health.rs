//! Upstream health through real sockets: active checks take a dead backend
//! out and bring it back, drains let in-flight requests finish, changes
//! toward a pool with no healthy backend are refused unless forced, and
//! passive ejection trips — within its cap.

mod common;

use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAST_CHECKS: &str =
    "[health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n";

async fn backend_health(proxy: &Proxy, pool: &str, addr: std::net::SocketAddr) -> String {
    let status = proxy.ctl("status").await;
    let pools = status["pools"].as_array().cloned().unwrap_or_default();
    let pool = pools
        .iter()
        .find(|p| p["name"] == pool)
        .cloned()
        .unwrap_or(Value::Null);
    let backends = pool["backends"].as_array().cloned().unwrap_or_default();
    backends
        .iter()
        .find(|b| b["addr"] == addr.to_string())
        .and_then(|b| b["health"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Time until `addr` in `pool` reports `state` (bounded by `within`).
async fn time_until(
    proxy: &Proxy,
    pool: &str,
    addr: std::net::SocketAddr,
    state: &str,
    within: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let reached = eventually(within, || async {
        backend_health(proxy, pool, addr).await == state
    })
    .await;
    reached.then(|| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_leaves_within_fall_times_interval_and_returns_after_rise() {
    let (b1, b2, green) = (
        origin("blue-1").await,
        origin("blue-2").await,
        origin("green").await,
    );
    let b2_addr = b2.addr();
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\", \"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
         {FAST_CHECKS}eject_consecutive_failures = 0\n",
        b1.addr(),
        b2_addr,
        green.addr()
    ))
    .await;
    assert_eq!(backend_health(&proxy, "blue", b2_addr).await, "up");

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_until(proxy.listen, 4, stop.clone(), 1_000_000));
    tokio::time::sleep(Duration::from_millis(300)).await; // traffic flowing
    b2.stop().await;
    let down_after = time_until(&proxy, "blue", b2_addr, "down", Duration::from_secs(5)).await;

    // Bring it back on the same address.
    let b2 = Origin::start(b2_addr, "blue-2")
        .await
        .expect("restart blue-2");
    let up_after = time_until(&proxy, "blue", b2_addr, "up", Duration::from_secs(5)).await;
    let served_before = b2.control().requests();
    let came_back = eventually(Duration::from_secs(5), || async {
        b2.control().requests() > served_before
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let results = load.await.unwrap();

    let down_after = down_after.expect("marked down");
    let up_after = up_after.expect("marked up again");
    eprintln!(
        "killed backend: down after {down_after:?}, back up after {up_after:?}, {} requests, {} failed",
        results.len(),
        failures(&results).len()
    );
    // fall × interval = 400 ms; one interval of phase slack plus the probe timeout.
    assert!(
        down_after <= Duration::from_millis(1200),
        "down after {down_after:?}"
    );
    assert!(
        up_after <= Duration::from_millis(1200),
        "up after {up_after:?}"
    );
    assert!(came_back, "traffic returned to the restarted backend");
    // Connect failures were retried on the live backend.
    assert_eq!(failures(&results), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_gets_no_new_requests_while_its_slow_request_finishes() {
    let (slow, fast, green) = (
        origin("slow").await,
        origin("fast").await,
        origin("green").await,
    );
    slow.control().set_delay(Duration::from_millis(1500));
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\", \"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
        slow.addr(),
        fast.addr(),
        green.addr()
    ))
    .await;
    // Route the next request to `slow` by draining `fast` for a moment.
    assert_eq!(
        proxy.ctl(&format!("drain blue {}", fast.addr())).await["ok"],
        true
    );
    let listen = proxy.listen;
    let in_flight = tokio::spawn(async move { get(listen, "/", &[]).await });
    assert!(
        eventually(Duration::from_secs(5), || async {
            slow.control().requests() == 1
        })
        .await
    );
    assert_eq!(
        proxy.ctl(&format!("undrain blue {}", fast.addr())).await["ok"],
        true
    );
    assert_eq!(
        proxy.ctl(&format!("drain blue {}", slow.addr())).await["ok"],
        true
    );

    let results = load(proxy.listen, 50, 4, "/").await;
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(reply) if reply.body == "fast\n")));
    assert_eq!(
        slow.control().requests(),
        1,
        "no new request reached the drained backend"
    );
    let reply = in_flight.await.unwrap().expect("in-flight request");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "slow\n"),
        "it completed"
    );

    // Drains survive a restart.
    let proxy = proxy.restart().await;
    let status = proxy.ctl("status").await;
    let drained: Vec<bool> = status["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["drained"].as_bool().unwrap())
        .collect();
    assert_eq!(drained, vec![true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_to_a_pool_without_healthy_backend_is_refused_unless_forced() {
    let blue = origin("blue").await;
    let dead = loopback(free_port());
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{dead}\"]\n[split]\nblue = 100\n{FAST_CHECKS}",
        blue.addr()
    ))
    .await;
    let refused = proxy.ctl("cutover green").await;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("green has no usable backend (every backend is failing its health checks)"),
        "{refused}"
    );
    let refused = proxy.ctl("split blue=50 green=50").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(proxy.ctl("status").await["revision"], 1, "nothing changed");

    let forced = proxy.ctl("cutover --force green").await;
    assert_eq!(forced["ok"], true, "{forced}");
    let history = proxy.ctl("history 1").await;
    let record = &history["history"][0];
    assert_eq!(record["command"], "cutover --force green");
    assert!(
        record["reason"].as_str().unwrap().contains("forced"),
        "{record}"
    );
    // Forced onto a dead pool: clients get 503 naming it, not a hang.
    let reply = get(proxy.listen, "/", &[]).await.unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("\"green\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_trips_on_consecutive_5xx_within_its_cap() {
    let (good, bad, green) = (
        origin("good").await,
        origin("bad").await,
        origin("green").await,
    );
    bad.control().set_fail_every(1); // every request 500, /health still 200
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\", \"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\nblue = 100\n\
         [health]\neject_consecutive_failures = 3\neject_base_time = \"30s\"\n",
        good.addr(),
        bad.addr(),
        green.addr()
    ))
    .await;
    let mut conn = Conn::open(proxy.listen).await.unwrap();
    let mut errors = 0;
    for _ in 0..100 {
        match conn.get("/", &[]).await {
            Ok(reply) if reply.status == 200 => {}
            _ => {
                errors += 1;
                conn = Conn::open(proxy.listen).await.unwrap();
            }
        }
    }
    assert_eq!(
        errors, 3,
        "exactly the streak that trips the ejection reached clients"
    );
    assert_eq!(backend_health(&proxy, "blue", bad.addr()).await, "ejected");
    assert_eq!(bad.control().requests(), 3);

    // The cap: with both backends failing, at most half (1 of 2) is ejected.
    good.control().set_fail_every(1);
    for _ in 0..20 {
        if conn.get("/", &[]).await.is_err() {
            conn = Conn::open(proxy.listen).await.unwrap();
        }
    }
    assert_eq!(
        backend_health(&proxy, "blue", good.addr()).await,
        "up",
        "never more than half ejected"
    );
}
