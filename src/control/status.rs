//! The status document: one JSON shape served by `GET /status` and the
//! `status` admin command.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::config::format_duration;
use crate::routing::RoutingTable;
use crate::stats::{now_ms, FailureKind, StatusClass, WindowStats};

/// Milliseconds with microsecond precision, or null.
fn millis(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!((d.as_micros() as f64) / 1000.0))
}

/// The figures of one pool over the guard window.
pub fn window_json(w: &WindowStats) -> Value {
    let classes: Map<String, Value> = StatusClass::ALL
        .iter()
        .map(|c| (c.label().to_string(), json!(w.count(*c))))
        .collect();
    let failures: Map<String, Value> = FailureKind::ALL
        .iter()
        .filter(|k| w.failures_of(**k) > 0)
        .map(|k| (k.label().to_string(), json!(w.failures_of(*k))))
        .collect();
    json!({
        "requests": w.requests,
        "errors": w.errors,
        "error_rate": (w.error_rate() * 100.0).round() / 100.0,
        "p50_ms": millis(w.p50),
        "p95_ms": millis(w.p95),
        "p99_ms": millis(w.p99),
        "classes": classes,
        "upstream_failures": failures,
    })
}

/// Revision, split, pools with their backends and windowed figures.
pub fn status_json(table: &RoutingTable) -> Value {
    let now = now_ms();
    let pools: Vec<Value> = table
        .pools
        .iter()
        .map(|pool| {
            json!({
                "name": pool.name,
                "share": pool.share.percent(),
                "backends": pool.backends.iter().map(|b| json!({
                    "addr": b.name,
                    "weight": b.weight,
                    "healthy": b.health.is_up(),
                    "health": b.health.state_label(),
                    "drained": b.drained,
                })).collect::<Vec<_>>(),
                "window": window_json(&pool.stats.window(now)),
            })
        })
        .collect();
    let split: Map<String, Value> = table
        .split
        .iter()
        .map(|(pool, share)| (pool.clone(), json!(share.percent())))
        .collect();
    json!({
        // Which process answered: during a binary upgrade, old or new.
        "pid": std::process::id(),
        "revision": table.revision,
        "split": split,
        "window": format_duration(table.config.guard.window),
        "pools": pools,
    })
}
