//! How switchyard judges and reports: `[health]` (active checks, passive
//! ejection), `[guard]` (automatic rollback), `[canary]` (the steps of a
//! canary run) and `[notify]` (webhooks).

use std::path::Path;

use super::{header_name, resolve_path, secs, tls};
use crate::config::parse_share;
use crate::config::types::{
    CanaryConfig, CanaryStep, GuardConfig, GuardMode, HealthConfig, NotifyConfig, NotifyFormat,
    Share,
};
use crate::config::walk::{expected, join, Errors, Section};

pub(super) fn read_health(errors: &mut Errors, root: &Section) -> HealthConfig {
    root.section(errors, "health", |h, errors| {
        let path = match h.str(errors, "path") {
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => {
                errors.add(h.key("path"), format!("\"{p}\" must start with '/'"));
                "/health".to_string()
            }
            None => "/health".to_string(),
        };
        let interval = h.positive_duration(errors, "interval", secs(2));
        let timeout = h.positive_duration(errors, "timeout", secs(1));
        if timeout > interval {
            errors.add(h.key("timeout"), "must not be longer than health.interval");
        }
        let eject_base_time = h.positive_duration(errors, "eject_base_time", secs(30));
        let eject_max_time = h.positive_duration(errors, "eject_max_time", secs(300));
        if eject_max_time < eject_base_time {
            errors.add(
                h.key("eject_max_time"),
                "must not be shorter than health.eject_base_time",
            );
        }
        HealthConfig {
            enabled: h.boolean(errors, "enabled").unwrap_or(true),
            path,
            interval,
            timeout,
            rise: h.int(errors, "rise", 1..=100).unwrap_or(2) as u32,
            fall: h.int(errors, "fall", 1..=100).unwrap_or(3) as u32,
            eject_consecutive_failures: h
                .int(errors, "eject_consecutive_failures", 0..=10_000)
                .unwrap_or(5) as u32,
            eject_base_time,
            eject_max_time,
            eject_max_percent: h.int(errors, "eject_max_percent", 0..=100).unwrap_or(50) as u32,
        }
    })
}

pub(super) fn read_guard(errors: &mut Errors, root: &Section) -> GuardConfig {
    root.section(errors, "guard", |g, errors| {
        let window = g.positive_duration(errors, "window", secs(30));
        if !(secs(1)..=secs(3600)).contains(&window) {
            errors.add(g.key("window"), "must be between 1s and 1h");
        }
        let percent = |errors: &mut Errors, key: &'static str| -> Option<f64> {
            let value = g.number(errors, key)?;
            if value > 0.0 && value <= 100.0 {
                Some(value)
            } else {
                errors.add(
                    g.key(key),
                    format!("{value} is not a percentage above 0 and at most 100"),
                );
                None
            }
        };
        // Read even when absent, so the key is known: absent means 5 %.
        let max_error_rate = percent(errors, "max_error_rate");
        let max_error_rate = if g.has("max_error_rate") {
            max_error_rate
        } else {
            Some(5.0)
        };
        let ratio = |errors: &mut Errors, key: &'static str| -> Option<f64> {
            let value = g.number(errors, key)?;
            if value > 1.0 && value.is_finite() {
                Some(value)
            } else {
                errors.add(g.key(key), format!("{value} must be a ratio above 1.0"));
                None
            }
        };
        let max_error_rate_vs_baseline = ratio(errors, "max_error_rate_vs_baseline");
        let max_p95_vs_baseline = ratio(errors, "max_p95_vs_baseline");
        let mut optional_duration = |key: &'static str| {
            let d = g.duration(errors, key);
            if d.is_some_and(|d| d.is_zero()) {
                errors.add(g.key(key), "must be greater than 0");
            }
            d
        };
        let max_p95 = optional_duration("max_p95");
        let max_p99 = optional_duration("max_p99");
        let alpha = match g.number(errors, "alpha") {
            Some(a) if a > 0.0 && a < 0.5 => a,
            Some(a) => {
                errors.add(g.key("alpha"), format!("{a} must be above 0 and below 0.5"));
                0.001
            }
            None => 0.001,
        };
        let mode = match g.str(errors, "mode") {
            None | Some("rollback") => GuardMode::Rollback,
            Some("observe") => GuardMode::Observe,
            Some(other) => {
                errors.add(
                    g.key("mode"),
                    format!("\"{other}\" is not a mode (\"rollback\" or \"observe\")"),
                );
                GuardMode::Rollback
            }
        };
        GuardConfig {
            enabled: g.boolean(errors, "enabled").unwrap_or(true),
            window,
            min_requests: g.int(errors, "min_requests", 1..=10_000_000).unwrap_or(50) as u64,
            max_error_rate,
            max_p95,
            max_p99,
            max_error_rate_vs_baseline,
            max_p95_vs_baseline,
            alpha,
            mode,
            watch: g.positive_duration(errors, "watch", secs(600)),
            rollback_target_ttl: g.positive_duration(errors, "rollback_target_ttl", secs(86_400)),
        }
    })
}

fn default_canary_steps() -> Vec<CanaryStep> {
    let step = |weight: u16, hold: Option<u64>| CanaryStep {
        weight: Share(weight * 100),
        hold: hold.map(secs),
    };
    vec![
        step(5, Some(300)),
        step(25, Some(600)),
        step(50, Some(900)),
        step(100, None),
    ]
}

pub(super) fn read_canary(errors: &mut Errors, root: &Section) -> CanaryConfig {
    root.section(errors, "canary", |c, errors| {
        let max_step_wait = c.positive_duration(errors, "max_step_wait", secs(1800));
        let Some(items) = c.array(errors, "steps") else {
            return CanaryConfig {
                steps: default_canary_steps(),
                max_step_wait,
            };
        };
        let mut steps = Vec::new();
        let last_index = items.len().saturating_sub(1);
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", c.key("steps"));
            let Some(table) = item.as_table() else {
                expected(errors, &path, "a table { weight = N, hold = \"5m\" }", item);
                continue;
            };
            let step = Section::read(errors, path, table, |s, errors| {
                read_step(errors, s, i == last_index, steps.last())
            });
            steps.extend(step);
        }
        if items.is_empty() {
            errors.add(c.key("steps"), "at least one step is needed");
        } else if steps.last().is_some_and(|s| s.weight != Share::FULL) {
            errors.add(c.key("steps"), "the last step must be weight = 100");
        }
        CanaryConfig {
            steps,
            max_step_wait,
        }
    })
}

/// One canary step; `None` when its weight is unusable.
fn read_step(
    errors: &mut Errors,
    s: &Section,
    last: bool,
    previous: Option<&CanaryStep>,
) -> Option<CanaryStep> {
    let weight = match s.number(errors, "weight") {
        Some(w) => match parse_share(w) {
            Ok(share) if share > Share::ZERO => Some(share),
            Ok(_) => {
                errors.add(s.key("weight"), "must be above 0");
                None
            }
            Err(e) => {
                errors.add(s.key("weight"), e.to_string());
                None
            }
        },
        None => {
            if !s.has("weight") {
                errors.add(s.key("weight"), "missing");
            }
            None
        }
    };
    let hold = s.duration(errors, "hold");
    if hold.is_none() && !s.has("hold") && !last {
        errors.add(
            s.key("hold"),
            "missing (every step but the last holds for a while)",
        );
    }
    let weight = weight?;
    if let Some(previous) = previous.map(|p| p.weight) {
        if weight <= previous {
            errors.add(
                s.key("weight"),
                format!("{weight} must be above the previous step's {previous}"),
            );
        }
    }
    Some(CanaryStep { weight, hold })
}

pub(super) fn read_notify(errors: &mut Errors, root: &Section, base_dir: &Path) -> NotifyConfig {
    root.section(errors, "notify", |n, errors| {
        let mut webhooks = Vec::new();
        for (i, item) in n
            .array(errors, "webhooks")
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("{}[{i}]", n.key("webhooks"));
            match item.as_str() {
                Some(url) if valid_webhook_url(url) => webhooks.push(url.to_string()),
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => errors
                    .add(
                    &path,
                    "invalid URL (expected http://host[:port]/path or https://host[:port]/path)",
                ),
                Some(_) => errors.add(&path, "only http:// and https:// URLs are supported"),
                None => expected(errors, &path, "a URL string", item),
            }
        }
        let ca = match n.str(errors, "ca_file") {
            Some(_) if !webhooks.iter().any(|url| url.starts_with("https://")) => {
                errors.add(n.key("ca_file"), "applies only to https:// webhooks");
                Vec::new()
            }
            Some(text) => match tls::load_ca_bundle(&resolve_path(base_dir, text)) {
                Ok(certs) => certs,
                Err(e) => {
                    errors.add(n.key("ca_file"), e.to_string());
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let format = match n.str(errors, "format") {
            None | Some("json") => NotifyFormat::Json,
            Some("slack") => NotifyFormat::Slack,
            Some(other) => {
                errors.add(
                    n.key("format"),
                    format!("\"{other}\": expected \"json\" or \"slack\""),
                );
                NotifyFormat::Json
            }
        };
        NotifyConfig {
            webhooks,
            timeout: n.positive_duration(errors, "timeout", secs(5)),
            retry_for: n.positive_duration(errors, "retry_for", secs(60)),
            ca,
            headers: read_webhook_headers(errors, n),
            format,
        }
    })
}

/// Headers a webhook POST sets itself, which `[notify].headers` may not.
const OWN_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
];

/// `[notify].headers`: a table of header name = value. A value may be a
/// secret, so no message quotes it.
fn read_webhook_headers(
    errors: &mut Errors,
    n: &Section,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let path = n.key("headers");
    let table = match n.raw("headers") {
        None => return Vec::new(),
        Some(toml::Value::Table(table)) => table,
        Some(other) => {
            expected(errors, &path, "a table of header = \"value\"", other);
            return Vec::new();
        }
    };
    let mut headers = Vec::new();
    for (name, value) in table {
        let key = join(&path, name);
        let Some(header) = header_name(errors, &key, name) else {
            continue;
        };
        if OWN_HEADERS.contains(&header.as_str()) {
            errors.add(&key, "is set by switchyard and cannot be configured");
            continue;
        }
        let Some(text) = value.as_str() else {
            expected(errors, &key, "a string", value);
            continue;
        };
        match http::HeaderValue::from_str(text) {
            Ok(mut value) => {
                value.set_sensitive(true);
                headers.push((header, value));
            }
            Err(_) => errors.add(
                &key,
                "not a valid header value (printable ASCII and spaces only)",
            ),
        }
    }
    headers
}

/// An `http://` or `https://` URL with a host.
fn valid_webhook_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url
            .parse::<http::Uri>()
            .is_ok_and(|uri| uri.host().is_some_and(|h| !h.is_empty()))
}
