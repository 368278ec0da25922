//! The live dashboard on `GET /` of the admin HTTP listener: one HTML page
//! compiled into the binary (no external assets, works offline) that polls
//! `/status`, `/history` and `/series` every second and draws what it
//! gets. Read-only: changes stay on the admin socket.
//!
//! `/series` is the recent past the page charts: once a second the admin
//! listener samples every pool's cumulative counters and keeps the last
//! [`POINTS`] samples, so a page opened mid-rollout shows the minutes before
//! it was opened. Sampling reads the same atomics as `/metrics`, off the
//! request path.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::clock::WallMs;
use crate::routing::RoutingTable;
use crate::stats::{quantile, PoolStats};

/// The page itself.
pub const PAGE: &str = include_str!("dashboard.html");

/// How often the series is sampled, and how many samples it keeps (5 min).
pub const INTERVAL: Duration = Duration::from_secs(1);
const POINTS: usize = 300;

/// One pool at one sample: what happened since the previous sample.
#[derive(Debug, Clone, Serialize)]
pub struct PoolPoint {
    pub share: f64,
    /// Requests finished per second.
    pub rps: f64,
    /// Percent of those answered 5xx or without an upstream answer.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix milliseconds.
    pub t: u64,
    pub pools: BTreeMap<String, PoolPoint>,
}

/// A pool's cumulative counts at the previous sample.
struct Seen {
    /// The statistics they were read from: a reload that rebuilds the
    /// pool's statistics starts its counts again from zero.
    stats: Arc<PoolStats>,
    requests: u64,
    errors: u64,
    latency: Vec<u64>,
}

#[derive(Default)]
pub struct Series {
    inner: Mutex<(VecDeque<Point>, HashMap<String, Seen>)>,
}

impl Series {
    /// Takes one sample of `table`'s pools, `elapsed` after the last one.
    pub fn sample(&self, table: &RoutingTable, now: WallMs, elapsed: Duration) {
        let mut guard = self.inner.lock();
        let (points, seen) = &mut *guard;
        let secs = elapsed.as_secs_f64().max(0.001);
        let mut pools = BTreeMap::new();
        let mut next = HashMap::new();
        for pool in &table.pools {
            let (requests, errors, latency) = pool.stats.counts();
            let before = seen
                .remove(&pool.name)
                .filter(|s| Arc::ptr_eq(&s.stats, &pool.stats));
            let point = before.map(|b| {
                let delta: Vec<u64> = latency
                    .iter()
                    .zip(&b.latency)
                    .map(|(now, was)| now.saturating_sub(*was))
                    .collect();
                let done = requests.saturating_sub(b.requests);
                let failed = errors.saturating_sub(b.errors);
                let ms =
                    |q| quantile(&delta, q).map(|d| (d.as_micros() as f64 / 10.0).round() / 100.0);
                PoolPoint {
                    share: pool.share.percent(),
                    rps: (done as f64 / secs * 10.0).round() / 10.0,
                    error_rate: if done == 0 {
                        0.0
                    } else {
                        (failed as f64 * 10_000.0 / done as f64).round() / 100.0
                    },
                    p50_ms: ms(0.50),
                    p95_ms: ms(0.95),
                }
            });
            if let Some(point) = point {
                pools.insert(pool.name.clone(), point);
            }
            next.insert(
                pool.name.clone(),
                Seen {
                    stats: Arc::clone(&pool.stats),
                    requests,
                    errors,
                    latency,
                },
            );
        }
        *seen = next;
        if !pools.is_empty() {
            if points.len() == POINTS {
                points.pop_front();
            }
            points.push_back(Point { t: now.0, pools });
        }
    }

    /// The samples kept, oldest first, as the page reads them.
    pub fn json(&self) -> String {
        let guard = self.inner.lock();
        let points: Vec<&Point> = guard.0.iter().collect();
        serde_json::json!({
            "interval_ms": INTERVAL.as_millis() as u64,
            "points": points,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{now_ms, StatusClass};

    #[test]
    fn a_sample_is_what_happened_since_the_previous_one() {
        let table = RoutingTable::from_config_text(
            "[pools.blue]\nbackends = [\"127.0.0.1:1\"]\n[pools.green]\nbackends = [\"127.0.0.1:2\"]\n\
             [split]\nblue = 90\ngreen = 10\n",
        );
        let series = Series::default();
        series.sample(&table, WallMs(1_000), INTERVAL);
        assert!(
            series.inner.lock().0.is_empty(),
            "the first sample is the baseline"
        );
        let blue = &table.pool("blue").unwrap().stats;
        for i in 0..10u64 {
            let class = if i < 2 {
                StatusClass::S5xx
            } else {
                StatusClass::S2xx
            };
            blue.record(now_ms(), class, Duration::from_millis(10));
        }
        series.sample(&table, WallMs(3_000), Duration::from_secs(2));
        let json: serde_json::Value = serde_json::from_str(&series.json()).unwrap();
        let point = &json["points"][0];
        assert_eq!(point["t"], 3_000);
        assert_eq!(point["pools"]["blue"]["rps"], 5.0);
        assert_eq!(point["pools"]["blue"]["error_rate"], 20.0);
        assert_eq!(point["pools"]["blue"]["share"], 90.0);
        let p50 = point["pools"]["blue"]["p50_ms"].as_f64().unwrap();
        assert!((9.5..=10.5).contains(&p50), "{p50}");
        assert_eq!(point["pools"]["green"]["rps"], 0.0);
        assert_eq!(point["pools"]["green"]["p95_ms"], serde_json::Value::Null);
    }
}
