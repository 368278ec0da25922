//! What the demo says: one line per thing that happened, with the time, read
//! from the admin socket (`status` and `history`) and from the demo's own
//! traffic; and the two scenarios that play a canary through to its end.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::traffic::{self, Tally, Traffic};
use super::{Scenario, Setup};
use crate::protocol::answer::{AuditRecord, GuardEvidence, History, SplitDoc, Status};

/// How often the demo looks at `status`.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// A scenario that has not reached its end by then has failed.
const SCENARIO_LIMIT: Duration = Duration::from_secs(50);
/// How much green fails in `canary-rollback`.
const BREAK_PERCENT: u32 = 30;

/// Prints one line on stdout, after the wall-clock time (UTC, ms).
pub fn say(line: impl Display) {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let clock = now.get(11..23).unwrap_or(&now);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{clock}  {line}");
    let _ = out.flush();
}

/// One admin command; a refusal is an error.
async fn admin(socket: &Path, command: &str) -> Result<Value, String> {
    let (socket, line) = (socket.to_path_buf(), command.to_string());
    let answer =
        tokio::task::spawn_blocking(move || crate::protocol::wire::request(&socket, &line))
            .await
            .map_err(|e| format!("admin socket: {e}"))?
            .map_err(|e| e.to_string())?;
    if answer["ok"] == Value::Bool(false) {
        return Err(format!(
            "{command}: refused: {}",
            answer["error"].as_str().unwrap_or("?")
        ));
    }
    Ok(answer)
}

fn split_text(split: &SplitDoc) -> String {
    split
        .iter()
        .map(|(pool, share)| format!("{pool}={share}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn share_of(split: &SplitDoc, pool: &str) -> f64 {
    split.get(pool).copied().unwrap_or(0.0)
}

/// Follows the proxy: prints every new audit record, the guard's evidence
/// when it rolls back, and what the traffic did since the last line.
struct Watch<'a> {
    socket: PathBuf,
    traffic: Option<&'a Traffic>,
    revision: u64,
    tally: Tally,
    tally_at: Instant,
}

impl<'a> Watch<'a> {
    async fn new(setup: &Setup, traffic: Option<&'a Traffic>) -> Result<Watch<'a>, String> {
        let mut watch = Watch {
            socket: setup.socket.clone(),
            traffic,
            revision: 0,
            tally: Tally::default(),
            tally_at: Instant::now(),
        };
        watch.revision = watch.status().await?.revision;
        watch.traffic_since_last();
        Ok(watch)
    }

    async fn status(&self) -> Result<Status, String> {
        let answer = admin(&self.socket, "status").await?;
        serde_json::from_value(answer).map_err(|e| format!("status: unreadable answer: {e}"))
    }

    /// The status now, and the audit records since the last look (oldest
    /// first), each already printed.
    async fn look(&mut self) -> Result<(Status, Vec<AuditRecord>), String> {
        let status = self.status().await?;
        if status.revision <= self.revision {
            return Ok((status, Vec::new()));
        }
        let n = (status.revision - self.revision).min(50);
        let answer = admin(&self.socket, &format!("history {n}")).await?;
        let history: History =
            serde_json::from_value(answer).map_err(|e| format!("history: unreadable: {e}"))?;
        let mut records: Vec<AuditRecord> = history
            .history
            .into_iter()
            .filter(|r| r.revision > self.revision)
            .collect();
        records.sort_by_key(|r| r.revision);
        self.revision = status.revision;
        if !records.is_empty() {
            // The traffic up to the change, so each line covers one split.
            if let Some(line) = self.traffic_since_last() {
                say(line);
            }
        }
        for record in &records {
            say(format_args!(
                "revision {} by {}: {} -> {}",
                record.revision,
                record.origin,
                record.command,
                split_text(&record.split)
            ));
            say(format_args!("    reason: {}", record.reason));
            if record.origin == "guard" {
                self.print_evidence(&status);
            }
        }
        Ok((status, records))
    }

    fn print_evidence(&self, status: &Status) {
        let Some(decision) = status
            .control
            .as_ref()
            .and_then(|c| c.guard.last_decision.as_ref())
        else {
            return;
        };
        say(format_args!(
            "    the guard's evidence (status: guard.last_decision, {} of pool {}):",
            decision.action, decision.pool
        ));
        if let Some(evidence) = &decision.evidence {
            for line in evidence_lines(evidence) {
                say(format_args!("      {line}"));
            }
        }
    }

    /// What the traffic did since the last call, as one line.
    fn traffic_since_last(&mut self) -> Option<String> {
        let traffic = self.traffic?;
        let now = traffic.tally();
        let line = format!(
            "traffic, last {:.1} s: {}",
            self.tally_at.elapsed().as_secs_f64(),
            now.since(self.tally).describe()
        );
        self.tally = now;
        self.tally_at = Instant::now();
        Some(line)
    }
}

/// The evidence of a guard decision, for people.
fn evidence_lines(e: &GuardEvidence) -> Vec<String> {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let relative = e.test.ends_with("_vs_baseline");
    let marked = if e.test.starts_with("error_rate") || e.test == "no_healthy_backend" {
        "failed"
    } else {
        "were slower than the limit"
    };
    let limit = match e.test.as_str() {
        _ if relative => format!("at most {:.2}x the baseline", e.limit),
        "p95" | "p99" => format!(
            "at most {} of requests slower than max_{}",
            pct(e.limit),
            e.test
        ),
        _ => format!("at most {}", pct(e.limit)),
    };
    let mut lines = vec![format!("test      {}: {limit}", e.test)];
    let estimate = match (e.estimate, e.estimate_low, e.estimate_high) {
        (Some(x), Some(lo), Some(hi)) => format!(": {} (95% CI {}-{})", pct(x), pct(lo), pct(hi)),
        (Some(x), _, _) => format!(": {}", pct(x)),
        _ => String::new(),
    };
    lines.push(format!(
        "measured  {} of {} requests {marked}{estimate}",
        e.marked, e.requests
    ));
    let since = e
        .since_first_bad_s
        .map(|s| format!(", {s:.1} s after the first bad batch"))
        .unwrap_or_default();
    lines.push(format!(
        "CUSUM     statistic {:.2} >= bound {:.2}{since}",
        e.statistic, e.bound
    ));
    if let Some(baseline) = &e.baseline {
        lines.push(format!(
            "baseline  {baseline}: {} of {} requests failed since the change",
            e.baseline_errors, e.baseline_requests
        ));
    }
    lines
}

/// The interactive demo: prints what happens until the demo is stopped.
pub async fn follow(setup: &Setup, traffic: Option<&Traffic>) -> Result<(), String> {
    let mut watch = Watch::new(setup, traffic).await?;
    say("following the proxy: changes, guard decisions, and the traffic every 10 s");
    let mut last_line = Instant::now();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        // A moment without an answer (a reload, a slow disk) is not the end.
        let Ok((status, _)) = watch.look().await else {
            continue;
        };
        if last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            if let Some(line) = watch.traffic_since_last() {
                say(format_args!("{line} · {}", canary_line(&status)));
            }
        }
    }
}

/// `split blue=90 green=10`, or where a canary stands.
fn canary_line(status: &Status) -> String {
    let split = format!("split {}", split_text(&status.split));
    match status.control.as_ref().and_then(|c| c.canary.as_ref()) {
        Some(c) => format!(
            "{split} · canary of {} at step {} of {}{}",
            c.pool,
            c.step,
            c.steps,
            c.waiting_for
                .as_deref()
                .map(|w| format!(", waiting for {w}"))
                .unwrap_or_default()
        ),
        None => split,
    }
}

/// Plays a scenario to its end: `Ok` once it ended as it should.
pub async fn play(
    scenario: Scenario,
    setup: &Setup,
    traffic: Option<&Traffic>,
) -> Result<(), String> {
    let Some(traffic) = traffic else {
        return Err("a scenario needs the demo's own traffic: leave out --no-traffic".into());
    };
    let started = Instant::now();
    let name = match scenario {
        Scenario::CanaryRollback => "canary-rollback",
        Scenario::CanarySuccess => "canary-success",
    };
    say(format_args!(
        "scenario {name}: proxy http://{}/, blue http://{}/, green http://{}/",
        setup.listen, setup.blue, setup.green
    ));
    say(format_args!(
        "config {} (canary steps 10% -> 50% -> 100%, 3 s holds, 20 requests of evidence a step)",
        setup.config.display()
    ));
    let mut watch = Watch::new(setup, Some(traffic)).await?;
    wait_for_traffic(traffic).await?;
    if let Some(line) = watch.traffic_since_last() {
        say(format_args!(
            "{} requests/s of the demo's own; {line}",
            traffic.rate
        ));
    }
    say(format_args!("$ {} canary start green", setup.ctl));
    let answer = admin(&setup.socket, "canary start green").await?;
    say(format_args!(
        "  -> {}",
        answer["message"].as_str().unwrap_or("applied")
    ));
    let outcome = match scenario {
        Scenario::CanaryRollback => rollback_story(setup, &mut watch).await,
        Scenario::CanarySuccess => success_story(&mut watch).await,
    };
    match &outcome {
        Ok(()) => say(format_args!(
            "scenario {name} done in {:.1} s",
            started.elapsed().as_secs_f64()
        )),
        Err(e) => say(format_args!("scenario {name} FAILED: {e}")),
    }
    outcome
}

/// Waits (bounded) until blue has answered a few requests of the traffic.
async fn wait_for_traffic(traffic: &Traffic) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while traffic.tally().blue_ok < 10 {
        if Instant::now() >= deadline {
            return Err(format!(
                "the traffic gets no answers from blue: {}",
                traffic.tally().describe()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every 2 s while waiting: the traffic and where the canary stands.
fn progress(watch: &mut Watch, status: &Status, last: &mut Instant) {
    if last.elapsed() >= Duration::from_secs(2) {
        *last = Instant::now();
        if let Some(line) = watch.traffic_since_last() {
            say(format_args!("{line} · {}", canary_line(status)));
        }
    }
}

/// Green breaks once the canary reaches step 2; the guard must roll back.
async fn rollback_story(setup: &Setup, watch: &mut Watch<'_>) -> Result<(), String> {
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let mut broken_at: Option<Instant> = None;
    let mut last = Instant::now();
    let rollback = loop {
        if Instant::now() >= deadline {
            return Err(format!("no rollback within {} s", SCENARIO_LIMIT.as_secs()));
        }
        tokio::time::sleep(LOOK_EVERY).await;
        let (status, records) = watch.look().await?;
        if let Some(record) = records.iter().find(|r| r.origin == "guard") {
            break (record.clone(), status);
        }
        let canary = status.control.as_ref().and_then(|c| c.canary.as_ref());
        if broken_at.is_none() && canary.is_some_and(|c| c.step >= 2) {
            let command = format!("/_demo/fail?percent={BREAK_PERCENT}");
            say(format_args!(
                "green is at 50%: now it breaks, {BREAK_PERCENT}% of its answers become 500:"
            ));
            say(format_args!(
                "$ curl -X POST 'http://{}{command}'",
                setup.green
            ));
            let reply = traffic::request(setup.green, "POST", &command).await?;
            say(format_args!("  -> {}", reply.body.trim_end()));
            broken_at = Some(Instant::now());
            watch.traffic_since_last();
            last = Instant::now();
            continue;
        }
        if canary.is_none() && broken_at.is_none() {
            return Err(format!(
                "the canary ended before green broke: split {}",
                split_text(&status.split)
            ));
        }
        progress(watch, &status, &mut last);
    };
    let (record, status) = rollback;
    let green = share_of(&record.split, "green");
    if green != 0.0 {
        return Err(format!("the guard left green at {green}%"));
    }
    if status.control.as_ref().is_some_and(|c| c.canary.is_some()) {
        return Err("the canary still runs after the rollback".into());
    }
    say(format_args!(
        "ROLLED BACK by the guard {:.1} s after green broke: the canary is aborted, green gets 0% \
         and blue serves everything",
        broken_at.map_or(0.0, |t| t.elapsed().as_secs_f64())
    ));
    // Show that the traffic is back on blue, and leave green healthy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(line) = watch.traffic_since_last() {
        say(line);
    }
    say(format_args!(
        "$ curl -X POST 'http://{}/_demo/heal'   # the guard never gives green traffic back by itself",
        setup.green
    ));
    let reply = traffic::request(setup.green, "POST", "/_demo/heal").await?;
    say(format_args!("  -> {}", reply.body.trim_end()));
    say(format_args!("$ {} history 4", setup.ctl));
    let answer = admin(&setup.socket, "history 4").await?;
    let history: History =
        serde_json::from_value(answer).map_err(|e| format!("history: unreadable: {e}"))?;
    for r in history.history {
        say(format_args!(
            "  {:>3}  {:<7} {:<30} {}",
            r.revision,
            r.origin,
            r.command,
            split_text(&r.split)
        ));
    }
    Ok(())
}

/// A healthy green goes step by step to 100 %.
async fn success_story(watch: &mut Watch<'_>) -> Result<(), String> {
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let mut last = Instant::now();
    loop {
        if Instant::now() >= deadline {
            return Err(format!(
                "no promotion within {} s",
                SCENARIO_LIMIT.as_secs()
            ));
        }
        tokio::time::sleep(LOOK_EVERY).await;
        let (status, records) = watch.look().await?;
        if let Some(record) = records.iter().find(|r| r.origin == "guard") {
            return Err(format!("the guard rolled back: {}", record.reason));
        }
        let canary = status.control.as_ref().and_then(|c| c.canary.as_ref());
        if canary.is_none() {
            let green = share_of(&status.split, "green");
            if green != 100.0 {
                return Err(format!(
                    "the canary ended with green at {green}%: split {}",
                    split_text(&status.split)
                ));
            }
            break;
        }
        progress(watch, &status, &mut last);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(line) = watch.traffic_since_last() {
        say(line);
    }
    say("PROMOTED: green serves 100%; the guard keeps watching it for 5m (blue is the rollback target)");
    Ok(())
}
