//! The status document: one JSON shape served by `GET /status` and the
//! `status` admin command.
//!
//! (Being completed: per-pool windowed figures arrive with the stats module.)

use serde_json::{json, Value};

use crate::routing::RoutingTable;
use crate::stats::now_ms;

/// Revision, split, pools with their backends and windowed figures.
pub fn status_json(table: &RoutingTable) -> Value {
    let _ = now_ms();
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
                    "drained": b.drained,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "revision": table.revision,
        "split": table.split.iter().map(|(k, v)| (k.clone(), json!(v.percent()))).collect::<serde_json::Map<_, _>>(),
        "pools": pools,
    })
}
