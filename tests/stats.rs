//! Inline statistics through the real proxy: what `/status` and `/metrics`
//! report matches what the origin was told to do.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;

const DELAY: Duration = Duration::from_millis(20);

async fn proxy_with_flaky_green() -> (Proxy, Origin, Origin) {
    let (blue, green) = (origin("blue").await, origin("green").await);
    green.control().set_fail_every(10);
    green.control().set_delay(DELAY);
    let proxy = Proxy::start(&format!(
        "[pools.blue]\nbackends = [\"{}\"]\n[pools.green]\nbackends = [\"{}\"]\n[split]\ngreen = 100\nblue = 0\n\
         [guard]\nwindow = \"5m\"\n",
        blue.addr(),
        green.addr()
    ))
    .await;
    (proxy, blue, green)
}

fn metric_values(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).expect("/metrics is Prometheus text format");
    let mut values = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        values.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_match_what_was_sent() {
    let (proxy, _blue, green) = proxy_with_flaky_green().await;
    const N: usize = 1000;
    let results = load(proxy.listen, N, 10, "/").await;
    let failed = results
        .iter()
        .filter(|r| !matches!(r, Ok(reply) if reply.status == 200))
        .count();
    assert_eq!(failed, N / 10, "exactly one in ten answered 500");
    assert_eq!(green.control().requests() as usize, N);

    let status: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/status").await.body).unwrap();
    let pool = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "green")
        .unwrap();
    let window = &pool["window"];
    assert_eq!(window["requests"], N as u64);
    assert_eq!(window["classes"]["2xx"], (N - N / 10) as u64);
    assert_eq!(window["classes"]["5xx"], (N / 10) as u64);
    assert_eq!(window["errors"], (N / 10) as u64);
    assert_eq!(window["error_rate"], 10.0);
    // 90 % of answers took DELAY plus the proxy's own time; p95 lands there.
    let p95 = window["p95_ms"].as_f64().unwrap();
    let delay_ms = DELAY.as_secs_f64() * 1000.0;
    // Upper bound: the histogram's 5 % plus the proxy's own time, which on a
    // busy 2-core machine running the whole suite can reach tens of ms.
    assert!(
        p95 >= delay_ms * 0.95 && p95 <= delay_ms * 1.05 + 40.0,
        "p95 {p95} ms"
    );
    let p50 = window["p50_ms"].as_f64().unwrap();
    assert!(p50 >= delay_ms * 0.95, "p50 {p50} ms");
    assert_eq!(status["split"]["green"], 100.0);

    let text = proxy.admin_get("/metrics").await.body;
    assert!(
        text.contains(&format!(
            "switchyard_request_duration_seconds_count{{pool=\"green\"}} {N}\n"
        )),
        "histogram count"
    );
    let metrics = metric_values(&text);
    let get = |key: &str| {
        metrics
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("missing {key}"))
    };
    assert_eq!(
        get("switchyard_requests_total{class=2xx,pool=green}"),
        (N - N / 10) as f64
    );
    assert_eq!(
        get("switchyard_requests_total{class=5xx,pool=green}"),
        (N / 10) as f64
    );
    assert_eq!(get("switchyard_requests_total{class=2xx,pool=blue}"), 0.0);
    assert_eq!(get("switchyard_split_percent{pool=green}"), 100.0);
    let backend = format!(
        "switchyard_backend_healthy{{backend={},pool=green}}",
        green.addr()
    );
    assert_eq!(get(&backend), 1.0);
    assert_eq!(get("switchyard_window_error_ratio{pool=green}"), 0.1);
    assert!(get("switchyard_revision{}") >= 1.0);
}
