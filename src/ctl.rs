//! `switchyard ctl`: sends one admin command over the Unix socket and shows
//! the answer — a readable table by default, the raw JSON with `--json`.
//! Exit codes: 0 ok, 1 refused, 2 socket unreachable.
//!
//! The words are parsed with the server's own `Command::parse` first, so a
//! malformed command is refused here, with the server's message, without a
//! server; answers are read into the protocol's types.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::Refusal;
use crate::protocol::answer::{
    Applied, ControlStatus, History, Refused, Reloaded, SplitDoc, Status, VerdictStatus,
};
use crate::protocol::wire::{one_line, request, ClientError};
use crate::protocol::Command;

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
    let sent = one_line(&command).and_then(|line| match Command::parse(line) {
        Ok(_) => request(&socket, line),
        // Refused as the server would refuse it, without asking it.
        Err(e) => Ok(serde_json::to_value(Refusal::from(e).answer()).unwrap_or_default()),
    });
    match sent {
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
                let verb = words
                    .first()
                    .and_then(|w| w.split_whitespace().next())
                    .unwrap_or("");
                match human(verb, &answer) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        eprintln!("switchyard ctl: unreadable answer ({e}): {answer}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                let error = serde_json::from_value::<Refused>(answer)
                    .map(|r| r.error)
                    .unwrap_or_else(|_| "no reason given".into());
                eprintln!("switchyard ctl: refused: {error}");
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn split_text(split: &SplitDoc) -> String {
    let parts: Vec<String> = split
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k}={}", pct(*v)))
        .collect();
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(" ")
    }
}

/// `90`, `99.99`: a percentage as an operator writes it.
fn pct(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.1}ms"))
}

/// The guard and canary lines of `status` (nothing against a server, or
/// an endpoint, that has no guard).
fn guard_lines(control: Option<&ControlStatus>) -> String {
    let mut out = String::new();
    let Some(control) = control else {
        return out;
    };
    let guard = &control.guard;
    let state = if !guard.enabled {
        "disabled"
    } else if guard.paused {
        "paused"
    } else {
        "on"
    };
    let watching = match &guard.watching {
        Some(w) => format!(
            ", watching {} for {}s more{}",
            w.pool,
            w.remaining_s,
            w.baseline
                .as_deref()
                .map(|b| format!(" (baseline {b})"))
                .unwrap_or_default()
        ),
        None => ", watching nothing".to_string(),
    };
    let verdict = match &guard.verdict {
        Some(VerdictStatus::Trip {
            threshold,
            measured,
            limit,
            requests,
        }) => format!(", verdict trip: {threshold} {measured} over {limit} on {requests} requests"),
        Some(VerdictStatus::Pass { requests }) => format!(", verdict pass ({requests} requests)"),
        Some(VerdictStatus::Insufficient { requests, .. }) => {
            format!(", verdict insufficient ({requests} requests)")
        }
        None => String::new(),
    };
    let _ = writeln!(out, "guard: {state}{watching}{verdict}");
    match &control.canary {
        Some(canary) => {
            let _ = writeln!(
                out,
                "canary: {} step {}/{} at {}%, {}s left in this step{}",
                canary.pool,
                canary.step,
                canary.steps,
                pct(canary.weight.unwrap_or(0.0)),
                canary.hold_remaining_s.round(),
                if canary.paused { " (paused)" } else { "" }
            );
        }
        None => out.push_str("canary: none\n"),
    }
    out
}

fn read<T: DeserializeOwned>(answer: &Value) -> Result<T, serde_json::Error> {
    T::deserialize(answer)
}

/// A readable rendering of an answer to `verb`.
fn human(verb: &str, answer: &Value) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    match verb {
        "status" => {
            let status: Status = read(answer)?;
            let _ = writeln!(
                out,
                "revision {}   split {}   window {}",
                status.revision,
                split_text(&status.split),
                status.window
            );
            match status
                .control
                .as_ref()
                .and_then(|c| c.rollback_target.as_ref())
            {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "rollback target: {} (from revision {}, {}s ago{})",
                        split_text(&t.split),
                        t.revision,
                        t.age_s,
                        if t.expired { ", expired" } else { "" }
                    );
                }
                None => out.push_str("rollback target: none\n"),
            }
            out.push_str(&guard_lines(status.control.as_ref()));
            let _ = writeln!(
                out,
                "\n{:<16} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9}",
                "POOL", "SHARE", "REQUESTS", "ERR%", "P50", "P95", "P99"
            );
            for pool in &status.pools {
                let w = &pool.window;
                let _ = writeln!(
                    out,
                    "{:<16} {:>7} {:>9} {:>7} {:>9} {:>9} {:>9}",
                    pool.name,
                    pct(pool.share),
                    w.requests,
                    format!("{:.2}", w.error_rate),
                    ms(w.p50_ms),
                    ms(w.p95_ms),
                    ms(w.p99_ms)
                );
                for b in &pool.backends {
                    let state = match (b.healthy, b.drained) {
                        (_, true) => "drained",
                        (true, _) => "healthy",
                        _ => "down",
                    };
                    let _ = writeln!(out, "  {:<30} weight {:<4} {state}", b.addr, b.weight);
                }
            }
        }
        "history" => {
            let history: History = read(answer)?;
            let _ = writeln!(
                out,
                "{:>5}  {:<24} {:<8} {:<32} REASON",
                "REV", "TIME", "ORIGIN", "COMMAND"
            );
            for r in &history.history {
                let origin = match r.uid {
                    Some(uid) => format!("{}:{uid}", r.origin),
                    None => r.origin.clone(),
                };
                let _ = writeln!(
                    out,
                    "{:>5}  {:<24} {:<8} {:<32} {}  [{}]",
                    r.revision,
                    r.time,
                    origin,
                    r.command,
                    r.reason,
                    split_text(&r.split)
                );
            }
        }
        "reload" => {
            let reloaded: Reloaded = read(answer)?;
            done(
                &mut out,
                reloaded.revision,
                &reloaded.message,
                reloaded.split.as_ref(),
            );
        }
        _ => {
            let applied: Applied = read(answer)?;
            done(
                &mut out,
                applied.revision,
                &applied.message,
                Some(&applied.split),
            );
        }
    }
    Ok(out)
}

/// `ok: revision N — message; split …`
fn done(out: &mut String, revision: u64, message: &str, split: Option<&SplitDoc>) {
    let _ = write!(out, "ok: revision {revision} — {message}");
    if let Some(split) = split {
        let _ = write!(out, "; split {}", split_text(split));
    }
    out.push('\n');
}
