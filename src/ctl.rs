//! `switchyard ctl`: sends one admin command over the Unix socket and shows
//! the answer — a readable table by default, the raw JSON with `--json`.
//!
//! Exit codes (`EXIT_*`): 0 applied, 1 refused, 2 socket unreachable (or
//! the exchange failed), 64 usage error (clap's errors, no command, a `-c`
//! file that can't be read). `help` is answered here, without a server.
//!
//! The words are parsed with the server's own `Command::parse` first, so a
//! malformed command is refused here, with the server's message and the
//! server's exit code (1, not 64: the same words sent by any client get the
//! same `bad_request` refusal), without a server; answers are read into the
//! protocol's types. Every output, human or `--json`, ends with a newline.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::Refusal;
use crate::protocol::answer::{
    Applied, ClusterAnswer, ClusterStatus, ControlStatus, History, LogsReopened, Refused, Reloaded,
    SplitDoc, Status, VerdictStatus,
};
use crate::protocol::command::USAGE;
use crate::protocol::wire::{one_line, request, ClientError};
use crate::protocol::Command;

pub const FALLBACK_SOCKET: &str = "/run/switchyard/admin.sock";

/// The command was refused (by the server, or here with its words).
pub const EXIT_REFUSED: u8 = 1;
/// No answer: the socket can't be reached or the exchange failed.
pub const EXIT_UNREACHABLE: u8 = 2;
/// The command line itself is wrong (sysexits' `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Where `ctl` looks for `[admin].socket` when `-s` is not given.
#[derive(Debug, Clone)]
pub enum ConfigFile {
    /// Named with `-c`: it must exist and be TOML, or `ctl` stops (exit 64)
    /// rather than talk to a socket nobody named.
    Named(PathBuf),
    /// The default path: may be absent (or broken), then the fallback socket.
    Default(PathBuf),
}

/// `[admin].socket` of the config file, read leniently (the rest of the file
/// need not be valid for `ctl` to find the socket); `FALLBACK_SOCKET` (the
/// server's own default) when the file has none, or when the default file
/// is absent. A file named with `-c` that can't be read or isn't TOML is an
/// error naming it.
pub fn socket_from_config(config: &ConfigFile) -> Result<PathBuf, String> {
    let (path, named) = match config {
        ConfigFile::Named(path) => (path.as_path(), true),
        ConfigFile::Default(path) => (path.as_path(), false),
    };
    let fallback = || Ok(PathBuf::from(FALLBACK_SOCKET));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if named => {
            return Err(format!(
                "cannot read the config file {} (-c): {e}",
                path.display()
            ))
        }
        Err(_) => return fallback(),
    };
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) if named => {
            let e = e.to_string();
            return Err(format!(
                "the config file {} (-c) is not valid TOML, so its [admin].socket is unknown: {}",
                path.display(),
                e.lines().next().unwrap_or_default()
            ));
        }
        Err(_) => return fallback(),
    };
    let Some(socket) = table
        .get("admin")
        .and_then(|a| a.get("socket"))
        .and_then(|s| s.as_str())
    else {
        return fallback();
    };
    let socket = Path::new(socket);
    Ok(if socket.is_absolute() {
        socket.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).join(socket)
    })
}

/// `--json` anywhere on the line is the flag (clap only sees it before the
/// command: the words after it are taken as they come, so `--force` and a
/// rollback's reason stay part of the command).
fn take_json(json: bool, words: &[String]) -> (bool, Vec<String>) {
    let kept: Vec<String> = words.iter().filter(|w| *w != "--json").cloned().collect();
    (json || kept.len() != words.len(), kept)
}

/// The vocabulary, one command a line, from the protocol's own `USAGE`.
fn vocabulary() -> Vec<&'static str> {
    USAGE
        .strip_prefix("commands: ")
        .unwrap_or(USAGE)
        .split(" | ")
        .collect()
}

/// `ctl help`: answered here, no server needed.
fn help(json: bool) -> String {
    let commands = vocabulary();
    if json {
        let answer = serde_json::json!({ "ok": true, "commands": commands });
        return format!("{answer}\n");
    }
    let mut out = String::from(
        "usage: switchyard ctl [-s SOCKET] [-c FILE] [--json] COMMAND…\n\ncommands:\n",
    );
    for command in commands {
        let _ = writeln!(out, "  {command}");
    }
    out.push_str(
        "  help                    this list (answered by ctl, no server needed)\n\n\
         --json (anywhere on the line) prints the raw JSON answer.\n\
         The socket is -s, else [admin].socket of -c FILE (default conf/switchyard.toml),\n\
         else /run/switchyard/admin.sock.\n\
         exit codes: 0 applied, 1 refused, 2 socket unreachable, 64 usage error\n",
    );
    out
}

/// The text with its final newline (every output ends with one).
fn line_ended(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

pub fn run(socket: Option<PathBuf>, config: &ConfigFile, json: bool, words: &[String]) -> ExitCode {
    let (json, words) = take_json(json, words);
    let command = words.join(" ");
    let verb = command.split_whitespace().next().unwrap_or("");
    if verb.is_empty() {
        eprintln!("switchyard ctl: no command given; `switchyard ctl help` lists them");
        return ExitCode::from(EXIT_USAGE);
    }
    // No admin verb starts with '-': clap takes an unknown option where the
    // command begins as its first word.
    if verb.starts_with('-') {
        eprintln!(
            "switchyard ctl: unknown option \"{verb}\" (the options are -s SOCKET, -c FILE, --json); \
             see `switchyard ctl --help`"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if verb == "help" {
        print!("{}", help(json));
        return ExitCode::SUCCESS;
    }
    let socket = match socket.map_or_else(|| socket_from_config(config), Ok) {
        Ok(socket) => socket,
        Err(message) => {
            eprintln!("switchyard ctl: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sent = one_line(&command).and_then(|line| match Command::parse(line) {
        Ok(_) => request(&socket, line),
        // Refused as the server would refuse it, without asking it.
        Err(e) => Ok(serde_json::to_value(Refusal::from(e).answer()).unwrap_or_default()),
    });
    match sent {
        Err(ClientError::Unreachable(message)) | Err(ClientError::Protocol(message)) => {
            eprintln!("switchyard ctl: {message}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
        Err(ClientError::Refused(message)) => {
            eprintln!("switchyard ctl: refused: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
        Ok(answer) => {
            let ok = answer["ok"].as_bool() == Some(true);
            if json {
                println!("{answer}");
            } else if ok {
                match human(verb, &answer) {
                    Ok(text) => print!("{}", line_ended(text)),
                    Err(e) => {
                        eprintln!("switchyard ctl: unreadable answer ({e}): {answer}");
                        return ExitCode::from(EXIT_UNREACHABLE);
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
                ExitCode::from(EXIT_REFUSED)
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
            requests,
            ..
        }) => format!(", verdict trip: {threshold} ({requests} requests since the change)"),
        Some(VerdictStatus::Pass { requests }) => format!(", verdict pass ({requests} requests)"),
        Some(VerdictStatus::Insufficient { requests, .. }) => {
            format!(", verdict insufficient ({requests} requests)")
        }
        None => String::new(),
    };
    let _ = writeln!(out, "guard: {state}{watching}{verdict}");
    if !guard.tests.is_empty() {
        let tests: Vec<String> = guard
            .tests
            .iter()
            .map(|t| format!("{} {:.2}", t.test, t.evidence))
            .collect();
        let _ = writeln!(
            out,
            "  evidence (1.00 = trip): {}; {} requests, {} errors since the change",
            tests.join(", "),
            guard.watch_requests,
            guard.watch_errors
        );
    }
    if let Some(last) = &guard.last_decision {
        let _ = writeln!(
            out,
            "  last {} at {}: {}",
            last.action, last.time, last.reason
        );
    }
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
            if let Some(waiting) = &canary.waiting_for {
                let _ = writeln!(out, "  waiting for {waiting}");
            }
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
            if let Some(cluster) = &status.cluster {
                out.push_str(&cluster_line(cluster));
            }
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
                for d in &pool.dns {
                    out.push_str(&dns_line(d));
                }
            }
            if let Some(m) = &status.mirror {
                out.push_str(&mirror_lines(m));
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
        "cluster" => {
            let answer: ClusterAnswer = read(answer)?;
            out.push_str(&cluster_line(&answer.cluster));
            if let Some(note) = &answer.note {
                let _ = writeln!(out, "members unknown: {note}");
            }
            let _ = writeln!(
                out,
                "\n{:<20} {:<24} {:>8} {:>5} {:>10}",
                "MEMBER", "ADDRESS", "APPLIED", "LAG", "LAST SEEN"
            );
            let dash = || "-".to_string();
            for m in &answer.members {
                let leader = answer.cluster.leader.as_deref() == Some(m.name.as_str());
                let _ = writeln!(
                    out,
                    "{:<20} {:<24} {:>8} {:>5} {:>10}",
                    format!("{}{}", m.name, if leader { " *" } else { "" }),
                    m.address.clone().unwrap_or_else(dash),
                    m.applied_revision
                        .map(|r| r.to_string())
                        .unwrap_or_else(dash),
                    m.lag.map(|l| l.to_string()).unwrap_or_else(dash),
                    m.last_seen_ms
                        .map(|ms| format!("{ms}ms ago"))
                        .unwrap_or_else(dash)
                        + if m.stale { " STALE" } else { "" }
                );
            }
        }
        "reopen-logs" => {
            let reopened: LogsReopened = read(answer)?;
            let _ = writeln!(out, "ok: {}", reopened.message);
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

/// The mirror's record: what is copied, the copies' figures, the verdict.
fn mirror_lines(m: &crate::protocol::answer::MirrorStatus) -> String {
    let total = |map: &std::collections::BTreeMap<String, u64>| {
        map.iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let none_if_empty = |text: String| {
        if text.is_empty() {
            "none".to_string()
        } else {
            text
        }
    };
    let w = &m.window;
    let evidence = match (m.statistic, m.bound) {
        (Some(s), Some(b)) => format!(", statistic {s:.2} of bound {b:.2}"),
        _ => String::new(),
    };
    format!(
        "\nmirror: {}% of {} to {} (bodies up to {} bytes), since {}\n  \
         copies {}  failed {} ({:.2}%)  [{}]\n  \
         window: {} copies, {:.2}% errors, p50 {} p95 {} p99 {}\n  \
         dropped: {}   skipped: {}\n  verdict: {}{evidence}\n",
        pct(m.percent),
        m.methods.join(","),
        m.pool,
        m.max_body,
        m.since,
        m.copies,
        m.errors,
        m.error_rate,
        none_if_empty(total(&m.classes)),
        w.requests,
        w.error_rate,
        ms(w.p50_ms),
        ms(w.p95_ms),
        ms(w.p99_ms),
        none_if_empty(total(&m.dropped)),
        none_if_empty(total(&m.skipped)),
        m.verdict,
    )
}

/// `cluster: edge-1 connected, leader edge-2, fleet revision 12, applied 12`
fn cluster_line(c: &ClusterStatus) -> String {
    let mut line = format!(
        "cluster: {} {}, leader {}, fleet revision {}, applied {}",
        c.name,
        if c.connected {
            "connected"
        } else {
            "DISCONNECTED (serving the last state)"
        },
        c.leader.as_deref().unwrap_or("unknown"),
        c.fleet_revision,
        c.applied_revision
    );
    if c.pending_writeback > 0 {
        line.push_str(&format!(
            ", {} local change(s) to write back",
            c.pending_writeback
        ));
    }
    if let Some(error) = &c.last_error {
        line.push_str(&format!("\n  etcd: {error}"));
    }
    line.push('\n');
    line
}

/// `  dns NAME  → N addresses [..], resolved Xs ago[, failing since T: error]`
fn dns_line(d: &crate::protocol::answer::DnsStatus) -> String {
    let resolved = match d.resolved_ago_s {
        Some(ago) => format!("resolved {ago:.1}s ago"),
        None => "never resolved".to_string(),
    };
    let mut line = format!(
        "  dns {:<26} {} address(es) [{}], {resolved}, {} change(s), {} failed lookup(s)",
        d.name,
        d.addresses.len(),
        d.addresses.join(", "),
        d.changes,
        d.failures
    );
    if let Some(error) = &d.last_error {
        let since = d.failing_since.as_deref().unwrap_or("?");
        line.push_str(&format!(
            "; failing since {since}: {error} (last good set kept)"
        ));
    }
    line.push('\n');
    line
}

/// `ok: revision N — message; split …`
fn done(out: &mut String, revision: u64, message: &str, split: Option<&SplitDoc>) {
    let _ = write!(out, "ok: revision {revision} — {message}");
    if let Some(split) = split {
        let _ = write!(out, "; split {}", split_text(split));
    }
    out.push('\n');
}
