//! `/metrics` as Prometheus reads it: the real binary with traffic in both
//! pools' windows (some of it 500s), a webhook receiver and one that is down;
//! the body must pass `promtool check metrics` and carry the webhook,
//! build and process series with plausible values.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A proxy moved from blue=100 to blue=50 green=50 by the operator, green
/// failing every third request, with 400 requests sent through it. The
/// guard observes (a trip changes nothing, so both pools keep traffic).
/// Returns the proxy, its origins and receiver (kept alive) and the
/// `/metrics` body once the webhook deliveries are counted.
async fn scraped_with_traffic() -> (Proxy, Vec<Origin>, String) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    green.control().set_fail_every(3);
    let (hook, events) = receiver().await;
    let down = loopback(free_port());
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n\
         [split]\nblue = 100\n\
         [guard]\nmin_requests = 20\nmode = \"observe\"\n\
         [notify]\nwebhooks = [\"http://{hook}/events\", \"http://{down}/events\"]\n\
         timeout = \"200ms\"\nretry_for = \"300ms\"\n",
        blue.addr(),
        green.addr()
    ))
    .await;
    let split = proxy.ctl("split blue=50 green=50").await;
    assert_eq!(split["ok"], true, "{split}");
    let results = load(proxy.listen, 400, 4, "/").await;
    let failed = failures(&results);
    assert!(
        failed.iter().all(|f| f.starts_with("status 500")),
        "only green's 500s expected: {failed:?}"
    );
    assert!(!failed.is_empty(), "green answered no 500");
    // start + split at least, each delivered to the receiver and given up
    // on for the closed port (retry_for 300 ms).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let received = events.lock().len() as f64;
        let body = proxy.admin_get("/metrics").await.body;
        let ok = metric(&body, "switchyard_webhook_deliveries_total{result=\"ok\"}");
        let gave_up = metric(
            &body,
            "switchyard_webhook_deliveries_total{result=\"failed\"}",
        );
        if received >= 2.0 && ok >= received && gave_up >= 2.0 {
            return (proxy, vec![blue, green], body);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "webhook deliveries not counted ({received} received):\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_with_traffic_in_every_window_pass_promtool() {
    let (_proxy, _origins, body) = scraped_with_traffic().await;
    for pool in ["blue", "green"] {
        assert!(
            metric(
                &body,
                &format!("switchyard_window_requests{{pool=\"{pool}\"}}")
            ) > 0.0,
            "no traffic in {pool}'s window:\n{body}"
        );
        assert!(
            body.contains(&format!(
                "switchyard_window_latency_seconds{{pool=\"{pool}\",q=\"0.99\"}}"
            )),
            "{body}"
        );
    }
    let output = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .expect("write to promtool");
            child.wait_with_output().expect("promtool")
        }
        Err(e) => {
            common::skip(&format!(
                "promtool not runnable ({e}); install Debian's `prometheus` package"
            ));
            return;
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("promtool check metrics: {} {said}", output.status);
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n--- body ---\n{body}",
        output.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_build_and_process_series_are_exported_with_help_and_type() {
    let (proxy, _origins, body) = scraped_with_traffic().await;
    let build = format!(
        "switchyard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&body, &build), 1.0, "{body}");
    assert_eq!(
        metric(
            &body,
            "switchyard_webhook_deliveries_total{result=\"dropped\"}"
        ),
        0.0
    );
    assert!(body.contains("switchyard_webhook_deliveries_total{result=\"dropped\"} 0"));

    let rss = metric(&body, "process_resident_memory_bytes");
    let vsz = metric(&body, "process_virtual_memory_bytes");
    assert!(rss > 1e6 && vsz >= rss, "rss {rss}, vsz {vsz}");
    let (open, max) = (
        metric(&body, "process_open_fds"),
        metric(&body, "process_max_fds"),
    );
    assert!(open >= 3.0 && max >= open, "open fds {open}, max {max}");
    // The proxy and its fds, as the kernel counts them.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
        .map(|d| d.count() as f64)
        .unwrap_or(open);
    assert!(
        (open - fds).abs() <= 16.0,
        "open fds {open}, /proc says {fds}"
    );
    assert!(metric(&body, "process_cpu_seconds_total") > 0.0, "{body}");
    let started = metric(&body, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "started {started}, now {now}"
    );

    // Every sample's family has HELP and TYPE; counters end in _total.
    let mut types = BTreeMap::new();
    let mut helps = Vec::new();
    for line in body.lines() {
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        match words.as_slice() {
            ["#", "TYPE", name, kind] => {
                assert!(types.insert(*name, *kind).is_none(), "{name} typed twice");
            }
            ["#", "HELP", name, ..] => helps.push(*name),
            _ => {}
        }
    }
    for (name, kind) in &types {
        assert!(helps.contains(name), "{name} has no HELP");
        assert_eq!(
            name.ends_with("_total"),
            *kind == "counter",
            "{name} {kind}"
        );
    }
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(f) == Some(&"histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{line}: no TYPE");
    }
}
