//! `switchyard ctl`: sends one admin command over the Unix socket and shows
//! the answer — a readable table by default, the raw JSON with `--json`.
//! Exit codes: 0 ok, 1 refused, 2 socket unreachable.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::protocol::{request, ClientError};

pub const FALLBACK_SOCKET: &str = "/run/switchyard/admin.sock";

/// `[admin].socket` of the config file, read leniently (the rest of the file
/// need not be valid for `ctl` to find the socket).
pub fn socket_from_config(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let socket = table.get("admin")?.get("socket")?.as_str()?;
    let path = Path::new(socket);
    Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(path)
    })
}

pub fn run(socket: Option<PathBuf>, config: &Path, json: bool, words: &[String]) -> ExitCode {
    let socket = socket
        .or_else(|| socket_from_config(config))
        .unwrap_or_else(|| PathBuf::from(FALLBACK_SOCKET));
    let command = words.join(" ");
    match request(&socket, &command) {
        Err(ClientError::Unreachable(message)) => {
            eprintln!("switchyard ctl: {message}");
            ExitCode::from(2)
        }
        Err(ClientError::Protocol(message)) => {
            eprintln!("switchyard ctl: {message}");
            ExitCode::from(2)
        }
        Err(ClientError::Refused(message)) => {
            eprintln!("switchyard ctl: refused: {message}");
            ExitCode::from(1)
        }
        Ok(answer) => {
            let ok = answer["ok"].as_bool() == Some(true);
            if json {
                println!("{answer}");
            } else if ok {
                print!(
                    "{}",
                    human(words.first().map(String::as_str).unwrap_or(""), &answer)
                );
            } else {
                eprintln!(
                    "switchyard ctl: refused: {}",
                    answer["error"].as_str().unwrap_or("no reason given")
                );
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn split_text(split: &Value) -> String {
    let parts: Vec<String> = split
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_f64().unwrap_or(0.0) > 0.0)
                .map(|(k, v)| format!("{k}={}", pct(v)))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(" ")
    }
}

/// `90`, `99.99`: a percentage as an operator writes it.
fn pct(value: &Value) -> String {
    let v = value.as_f64().unwrap_or(0.0);
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A JSON scalar as plain text (strings without quotes), so it pads.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ms(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |v| format!("{v:.1}ms"))
}

/// The guard and canary lines of `status` (absent fields print nothing, so
/// this also works against a server that has no guard).
fn guard_lines(answer: &Value) -> String {
    let mut out = String::new();
    let guard = &answer["guard"];
    if guard.is_object() {
        let state = if guard["enabled"].as_bool() == Some(false) {
            "disabled"
        } else if guard["paused"].as_bool() == Some(true) {
            "paused"
        } else {
            "on"
        };
        let watching = match guard["watching"].as_object() {
            Some(w) => format!(
                ", watching {} for {}s more{}",
                plain(&w["pool"]),
                plain(&w["remaining_s"]),
                w["baseline"]
                    .as_str()
                    .map(|b| format!(" (baseline {b})"))
                    .unwrap_or_default()
            ),
            None => ", watching nothing".to_string(),
        };
        let verdict = match guard["verdict"]["verdict"].as_str() {
            Some("trip") => format!(
                ", verdict trip: {} {} over {} on {} requests",
                plain(&guard["verdict"]["threshold"]),
                plain(&guard["verdict"]["measured"]),
                plain(&guard["verdict"]["limit"]),
                plain(&guard["verdict"]["requests"])
            ),
            Some(v) => format!(
                ", verdict {v} ({} requests)",
                plain(&guard["verdict"]["requests"])
            ),
            None => String::new(),
        };
        let _ = writeln!(out, "guard: {state}{watching}{verdict}");
    }
    let canary = &answer["canary"];
    if canary.is_object() {
        let _ = writeln!(
            out,
            "canary: {} step {}/{} at {}%, {}s left in this step{}",
            plain(&canary["pool"]),
            plain(&canary["step"]),
            plain(&canary["steps"]),
            pct(&canary["weight"]),
            canary["hold_remaining_s"].as_f64().unwrap_or(0.0).round(),
            if canary["paused"].as_bool() == Some(true) {
                " (paused)"
            } else {
                ""
            }
        );
    } else if guard.is_object() {
        out.push_str("canary: none\n");
    }
    out
}

/// A readable rendering of an answer.
fn human(verb: &str, answer: &Value) -> String {
    let mut out = String::new();
    match verb {
        "status" => {
            let _ = writeln!(
                out,
                "revision {}   split {}   window {}",
                plain(&answer["revision"]),
                split_text(&answer["split"]),
                answer["window"].as_str().unwrap_or("?")
            );
            match answer.get("rollback_target") {
                Some(t) if !t.is_null() => {
                    let _ = writeln!(
                        out,
                        "rollback target: {} (from revision {}, {}s ago{})",
                        split_text(&t["split"]),
                        plain(&t["revision"]),
                        plain(&t["age_s"]),
                        if t["expired"].as_bool() == Some(true) {
                            ", expired"
                        } else {
                            ""
                        }
                    );
                }
                _ => out.push_str("rollback target: none\n"),
            }
            out.push_str(&guard_lines(answer));
            let _ = writeln!(
                out,
                "\n{:<16} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9}",
                "POOL", "SHARE", "REQUESTS", "ERR%", "P50", "P95", "P99"
            );
            for pool in answer["pools"].as_array().into_iter().flatten() {
                let w = &pool["window"];
                let _ = writeln!(
                    out,
                    "{:<16} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9}",
                    pool["name"].as_str().unwrap_or("?"),
                    pct(&pool["share"]),
                    plain(&w["requests"]),
                    format!("{:.2}", w["error_rate"].as_f64().unwrap_or(0.0)),
                    ms(&w["p50_ms"]),
                    ms(&w["p95_ms"]),
                    ms(&w["p99_ms"])
                );
                for b in pool["backends"].as_array().into_iter().flatten() {
                    let state = match (b["healthy"].as_bool(), b["drained"].as_bool()) {
                        (_, Some(true)) => "drained",
                        (Some(true), _) => "healthy",
                        _ => "down",
                    };
                    let _ = writeln!(
                        out,
                        "  {:<30} weight {:<4} {state}",
                        b["addr"].as_str().unwrap_or("?"),
                        plain(&b["weight"])
                    );
                }
            }
        }
        "history" => {
            let _ = writeln!(
                out,
                "{:>5}  {:<24} {:<8} {:<32} REASON",
                "REV", "TIME", "ORIGIN", "COMMAND"
            );
            for r in answer["history"].as_array().into_iter().flatten() {
                let origin = match r["uid"].as_u64() {
                    Some(uid) => format!("{}:{uid}", r["origin"].as_str().unwrap_or("?")),
                    None => r["origin"].as_str().unwrap_or("?").to_string(),
                };
                let _ = writeln!(
                    out,
                    "{:>5}  {:<24} {:<8} {:<32} {}  [{}]",
                    plain(&r["revision"]),
                    r["time"].as_str().unwrap_or("?"),
                    origin,
                    r["command"].as_str().unwrap_or("?"),
                    r["reason"].as_str().unwrap_or(""),
                    split_text(&r["split"])
                );
            }
        }
        _ => {
            let _ = write!(out, "ok: revision {}", plain(&answer["revision"]));
            if let Some(message) = answer["message"].as_str() {
                let _ = write!(out, " — {message}");
            }
            if answer.get("split").is_some() {
                let _ = write!(out, "; split {}", split_text(&answer["split"]));
            }
            out.push('\n');
        }
    }
    out
}
