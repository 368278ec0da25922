//! Prometheus text rendering of switchyard's series (SPEC §7).
//!
//! Rendered at scrape time from the routing table in force, so the series of
//! a pool removed by a reload disappear with it (no stale registry entries).
//! Our series are written directly in the text exposition format — their
//! values already live in our own atomics, and a histogram with precomputed
//! buckets has no setter in the `prometheus` crate. The standard `process_*`
//! series come from `/proc` ([`super::process_metrics`]); the crate's default
//! registry (library metrics, if any registers) is appended after them.
//!
//! Every family has `# HELP` and `# TYPE`, counters end in `_total`, and the
//! body passes `promtool check metrics` (tests/metrics.rs runs it).

use std::fmt::Write;

use crate::cluster::Cluster;
use crate::routing::RoutingTable;
use crate::shared::Shared;
use crate::stats::{now_ms, FailureKind, StatusClass};

/// The full `/metrics` body (`cluster`: fleet mode's link, if any).
pub fn render(shared: &Shared, cluster: Option<&Cluster>) -> String {
    let table = shared.table();
    let mut out = String::with_capacity(8 * 1024);
    render_table(&mut out, &table);
    if let Some(cluster) = cluster {
        render_cluster(&mut out, cluster, &table);
    }
    render_discovery(&mut out, &table);
    render_mirror(&mut out, &table);
    render_process(&mut out, shared, &table);
    super::process_metrics::render(&mut out);
    let encoder = prometheus::TextEncoder::new();
    if let Ok(text) = encoder.encode_to_string(&prometheus::gather()) {
        out.push_str(&text);
    }
    out
}

/// Fleet mode (SPEC §9): is etcd answering, and which fleet revision is
/// in force here (the table's: what requests are routed by).
fn render_cluster(out: &mut String, cluster: &Cluster, table: &RoutingTable) {
    header(
        out,
        "cluster_connected",
        "gauge",
        "1 while etcd answers this instance.",
    );
    let up = u8::from(cluster.link.connected());
    let _ = writeln!(out, "switchyard_cluster_connected {up}");
    header(
        out,
        "cluster_revision",
        "gauge",
        "The fleet revision in force on this instance.",
    );
    let _ = writeln!(out, "switchyard_cluster_revision {}", table.revision);
    header(
        out,
        "cluster_leader",
        "gauge",
        "1 while this instance leads the fleet (runs the guard and canary on the fleet's counts).",
    );
    let leads = u8::from(cluster.role.is_leader());
    let _ = writeln!(out, "switchyard_cluster_leader {leads}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP switchyard_{name} {help}");
    let _ = writeln!(out, "# TYPE switchyard_{name} {kind}");
}

/// Label values escaped per the exposition format (\\, \", \n).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `dns` backends of the table in force (so a removed one's series
/// disappear with it).
fn render_discovery(out: &mut String, table: &RoutingTable) {
    let entries: Vec<_> = table
        .pools
        .iter()
        .flat_map(|p| p.dns.iter().map(move |d| (escape(&p.name), d)))
        .map(|(pool, d)| (pool, escape(&d.name), d.addrs.len(), d.lookups.record()))
        .collect();
    if entries.is_empty() {
        return;
    }
    let families: [(&str, &str, &str); 3] = [
        (
            "discovery_addresses",
            "gauge",
            "Addresses in force for a dns backend (its last good answer).",
        ),
        (
            "discovery_changes_total",
            "counter",
            "DNS answers that changed a dns backend's address set.",
        ),
        (
            "discovery_failures_total",
            "counter",
            "Failed lookups of a dns backend (timeout, NXDOMAIN, SERVFAIL, unreachable, empty); the last good set stays.",
        ),
    ];
    for (i, (name, kind, help)) in families.iter().enumerate() {
        header(out, name, kind, help);
        for (pool, dns, addrs, record) in &entries {
            let value = match i {
                0 => *addrs as u64,
                1 => record.changes,
                _ => record.failures,
            };
            let _ = writeln!(
                out,
                "switchyard_{name}{{pool=\"{pool}\",name=\"{dns}\"}} {value}"
            );
        }
    }
}

/// `[mirror]`'s copies, counted apart from the pool's own requests (the
/// families are absent without a mirror).
fn render_mirror(out: &mut String, table: &RoutingTable) {
    use crate::mirror::route::{Dropped, Skipped};
    let Some(route) = table.mirror.as_ref() else {
        return;
    };
    let stats = &route.stats;
    let pool = escape(&stats.pool);
    let t = stats.copies.totals();
    header(
        out,
        "mirror_requests_total",
        "counter",
        "Mirrored copies answered, by mirror pool and status class (error = no response).",
    );
    for class in StatusClass::ALL {
        let _ = writeln!(
            out,
            "switchyard_mirror_requests_total{{pool=\"{pool}\",class=\"{}\"}} {}",
            class.label(),
            t.by_class[class as usize]
        );
    }
    header(
        out,
        "mirror_request_duration_seconds",
        "histogram",
        "Latency of mirrored copies, from their send to the end of the answer.",
    );
    for (le, count) in &t.buckets {
        let _ = writeln!(
            out,
            "switchyard_mirror_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"{le}\"}} {count}"
        );
    }
    let _ = writeln!(
        out,
        "switchyard_mirror_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {}",
        t.latency_count
    );
    let _ = writeln!(
        out,
        "switchyard_mirror_request_duration_seconds_sum{{pool=\"{pool}\"}} {}",
        t.latency_sum.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "switchyard_mirror_request_duration_seconds_count{{pool=\"{pool}\"}} {}",
        t.latency_count
    );
    header(
        out,
        "mirror_upstream_failures_total",
        "counter",
        "Failed mirrored copies, by mirror pool and kind.",
    );
    for kind in FailureKind::ALL {
        let _ = writeln!(
            out,
            "switchyard_mirror_upstream_failures_total{{pool=\"{pool}\",kind=\"{}\"}} {}",
            kind.label(),
            t.failures[kind as usize]
        );
    }
    header(
        out,
        "mirror_dropped_total",
        "counter",
        "Copies made and not sent, by reason (queue_full: the mirror fell behind).",
    );
    for why in Dropped::ALL {
        let _ = writeln!(
            out,
            "switchyard_mirror_dropped_total{{pool=\"{pool}\",reason=\"{}\"}} {}",
            why.label(),
            stats.dropped(why)
        );
    }
    header(
        out,
        "mirror_skipped_total",
        "counter",
        "Requests chosen for a copy and not copied, by reason (body_too_large, body_not_buffered).",
    );
    for why in Skipped::ALL {
        let _ = writeln!(
            out,
            "switchyard_mirror_skipped_total{{pool=\"{pool}\",reason=\"{}\"}} {}",
            why.label(),
            stats.skipped(why)
        );
    }
}

fn render_table(out: &mut String, table: &RoutingTable) {
    let totals: Vec<_> = table
        .pools
        .iter()
        .map(|p| (escape(&p.name), p.stats.totals()))
        .collect();

    header(
        out,
        "requests_total",
        "counter",
        "Requests finished, by pool and status class (error = no response from upstream).",
    );
    for (pool, t) in &totals {
        for class in StatusClass::ALL {
            let _ = writeln!(
                out,
                "switchyard_requests_total{{pool=\"{pool}\",class=\"{}\"}} {}",
                class.label(),
                t.by_class[class as usize]
            );
        }
    }

    header(
        out,
        "request_duration_seconds",
        "histogram",
        "Request latency through the proxy, by pool.",
    );
    for (pool, t) in &totals {
        for (le, count) in &t.buckets {
            let _ = writeln!(
                out,
                "switchyard_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"{le}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {}",
            t.latency_count
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_sum{{pool=\"{pool}\"}} {}",
            t.latency_sum.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "switchyard_request_duration_seconds_count{{pool=\"{pool}\"}} {}",
            t.latency_count
        );
    }

    header(
        out,
        "upstream_failures_total",
        "counter",
        "Failed upstream attempts (each retry counts), by pool and kind.",
    );
    for (pool, t) in &totals {
        for kind in FailureKind::ALL {
            let _ = writeln!(
                out,
                "switchyard_upstream_failures_total{{pool=\"{pool}\",kind=\"{}\"}} {}",
                kind.label(),
                t.failures[kind as usize]
            );
        }
    }

    header(
        out,
        "split_percent",
        "gauge",
        "Share of traffic per pool in the split in force.",
    );
    for pool in &table.pools {
        let _ = writeln!(
            out,
            "switchyard_split_percent{{pool=\"{}\"}} {}",
            escape(&pool.name),
            pool.share.percent()
        );
    }

    header(
        out,
        "backend_healthy",
        "gauge",
        "1 if the backend may receive requests (up and not drained), else 0.",
    );
    for pool in &table.pools {
        for backend in &pool.backends {
            let _ = writeln!(
                out,
                "switchyard_backend_healthy{{pool=\"{}\",backend=\"{}\"}} {}",
                escape(&pool.name),
                escape(&backend.name),
                u8::from(backend.health.is_up())
            );
        }
    }

    let now = now_ms();
    header(
        out,
        "window_requests",
        "gauge",
        "Requests in the guard's sliding window, by pool.",
    );
    let windows: Vec<_> = table
        .pools
        .iter()
        .map(|p| (escape(&p.name), p.stats.window(now)))
        .collect();
    for (pool, w) in &windows {
        let _ = writeln!(
            out,
            "switchyard_window_requests{{pool=\"{pool}\"}} {}",
            w.requests
        );
    }
    header(
        out,
        "window_error_ratio",
        "gauge",
        "Share of requests in the window answered 5xx or failed upstream (0..1).",
    );
    for (pool, w) in &windows {
        let _ = writeln!(
            out,
            "switchyard_window_error_ratio{{pool=\"{pool}\"}} {}",
            w.error_rate() / 100.0
        );
    }
    // Gauges labelled `q`, not a summary: these are readings of the guard's
    // sliding window, and a summary's `_sum`/`_count` would have to be
    // either this window's (not counters: rate() over them would lie) or
    // the lifetime's (already `request_duration_seconds`). Prometheus
    // reserves `quantile` for summaries, hence `q`.
    header(
        out,
        "window_latency_seconds",
        "gauge",
        "Latency quantile q over the guard's window, by pool (absent without requests).",
    );
    for (pool, w) in &windows {
        for (q, value) in [("0.5", w.p50), ("0.95", w.p95), ("0.99", w.p99)] {
            if let Some(v) = value {
                let _ = writeln!(
                    out,
                    "switchyard_window_latency_seconds{{pool=\"{pool}\",q=\"{q}\"}} {}",
                    v.as_secs_f64()
                );
            }
        }
    }

    header(
        out,
        "revision",
        "gauge",
        "Revision of the routing table in force.",
    );
    let _ = writeln!(out, "switchyard_revision {}", table.revision);
}

fn render_process(out: &mut String, shared: &Shared, _table: &RoutingTable) {
    use std::sync::atomic::Ordering::Relaxed;
    header(
        out,
        "rollbacks_total",
        "counter",
        "Rollbacks by reason (manual, or the guard threshold that tripped).",
    );
    for (reason, count) in shared.rollbacks() {
        let _ = writeln!(
            out,
            "switchyard_rollbacks_total{{reason=\"{}\"}} {count}",
            escape(&reason)
        );
    }
    header(
        out,
        "access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind (or the file failed).",
    );
    let _ = writeln!(
        out,
        "switchyard_access_log_dropped_total {}",
        crate::access_log::dropped()
    );
    header(
        out,
        "guard_evidence",
        "gauge",
        "The guard's sequential statistic over its bound, per test of the watched pool \
         (1.0 = trip; absent when nothing is watched).",
    );
    for (pool, test, ratio) in shared.guard_evidence() {
        let _ = writeln!(
            out,
            "switchyard_guard_evidence{{pool=\"{}\",test=\"{test}\"}} {ratio:.4}",
            escape(&pool)
        );
    }
    header(
        out,
        "config_reloads_total",
        "counter",
        "Config reloads by result (error = rejected, the running config stayed).",
    );
    let _ = writeln!(
        out,
        "switchyard_config_reloads_total{{result=\"ok\"}} {}",
        shared.reloads_ok.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "switchyard_config_reloads_total{{result=\"error\"}} {}",
        shared.reloads_failed.load(Relaxed)
    );
    header(
        out,
        "webhook_deliveries_total",
        "counter",
        "Webhook deliveries by result (ok = a 2xx answer; failed = gave up after retry_for; \
         dropped = the queue was full).",
    );
    for (result, counter) in [
        ("ok", &shared.webhooks_ok),
        ("failed", &shared.webhooks_failed),
        ("dropped", &shared.webhooks_dropped),
    ] {
        let _ = writeln!(
            out,
            "switchyard_webhook_deliveries_total{{result=\"{result}\"}} {}",
            counter.load(Relaxed)
        );
    }
    header(
        out,
        "build_info",
        "gauge",
        "Always 1; the version label is the running binary's.",
    );
    let _ = writeln!(
        out,
        "switchyard_build_info{{version=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION"))
    );
    header(
        out,
        "pingora_handoffs_total",
        "counter",
        "Plain client connections the HTTP/1.1 fast path handed to pingora's HTTP layer \
         (a request it leaves to pingora, or fast_path off).",
    );
    let _ = writeln!(
        out,
        "switchyard_pingora_handoffs_total {}",
        shared.pingora_handoffs.load(Relaxed)
    );
}
