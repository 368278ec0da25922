//! The controller across restarts, through its public API: which split is in
//! force after a start with a given file and a given saved state (SPEC §4),
//! what happens to a lost or corrupt state file, and what a reload keeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{ChangeOrigin, Command, Controller};
use crate::clock::Now;
use crate::config;

const ADMIN: ChangeOrigin = ChangeOrigin::Admin { uid: Some(1000) };

/// A config file and state dir of their own, removed on drop.
struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("sy-ctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Setup { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("switchyard.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Writes the file (pools and split) and starts a controller on it, as
    /// a process start does.
    fn start(&self, pools: &[&str], split: &str) -> Arc<Controller> {
        self.start_with(pools, split, "")
    }

    /// `start` with more sections appended to the file.
    fn start_with(&self, pools: &[&str], split: &str, extra: &str) -> Arc<Controller> {
        let mut text = format!(
            // No active checks: backends count as up without a checker.
            "[admin]\nsocket = \"{d}/admin.sock\"\nstate_dir = \"{d}/state\"\n\
             [health]\nenabled = false\n",
            d = self.dir.display()
        );
        for (i, pool) in pools.iter().enumerate() {
            text.push_str(&format!(
                "[pools.{pool}]\nbackends = [\"127.0.0.1:{}\"]\n",
                9001 + i
            ));
        }
        text.push_str(&format!("[split]\n{split}\n{extra}"));
        std::fs::write(self.config_path(), text).unwrap();
        let config = config::load(&self.config_path()).unwrap();
        Controller::start(&self.config_path(), config).unwrap().0
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command's answer as the socket would send it, or the refusal's text.
fn apply_at(controller: &Controller, command: Command, now: Now) -> Result<Value, String> {
    controller
        .apply(command, ADMIN, now)
        .map(|answer| serde_json::to_value(answer).unwrap())
        .map_err(|refusal| refusal.to_string())
}

fn status(controller: &Controller) -> Value {
    apply_at(controller, Command::Status, Now::read()).unwrap()
}

fn reload(controller: &Controller, origin: ChangeOrigin) -> Result<Value, String> {
    controller
        .reload(origin, Now::read())
        .map(|answer| serde_json::to_value(answer).unwrap())
        .map_err(|refusal| refusal.to_string())
}

fn split_of(controller: &Controller) -> Vec<(String, f64)> {
    let status = status(controller);
    let mut split: Vec<(String, f64)> = status["split"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    split.sort_by(|a, b| a.0.cmp(&b.0));
    split
}

fn pairs(list: &[(&str, f64)]) -> Vec<(String, f64)> {
    list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn revision(controller: &Controller) -> u64 {
    status(controller)["revision"].as_u64().unwrap()
}

fn run(controller: &Controller, line: &str) -> Result<Value, String> {
    run_at(controller, line, Now::read())
}

fn run_at(controller: &Controller, line: &str, now: Now) -> Result<Value, String> {
    apply_at(controller, Command::parse(line).map_err(|e| e.0)?, now)
}

fn last_audit(controller: &Controller) -> Value {
    let history = apply_at(controller, Command::History(1), Now::read()).unwrap();
    history["history"][0].clone()
}

#[test]
fn the_runtime_split_survives_a_restart_while_the_file_split_is_unchanged() {
    let setup = Setup::new("keep");
    let c = setup.start(&["blue", "green"], "blue = 100");
    assert_eq!(revision(&c), 1);
    assert_eq!(last_audit(&c)["origin"], "startup");
    run(&c, "split blue=70 green=30").unwrap();
    drop(c);

    let c = setup.start(&["blue", "green"], "blue = 100");
    assert_eq!(split_of(&c), pairs(&[("blue", 70.0), ("green", 30.0)]));
    assert_eq!(revision(&c), 2, "a plain restart is not a change");
    let status = status(&c);
    assert_eq!(status["rollback_target"]["split"]["blue"], 100.0);
}

#[test]
fn a_changed_file_split_wins_at_start_as_a_revision_of_its_own() {
    let setup = Setup::new("filewins");
    let c = setup.start(&["blue", "green"], "blue = 100");
    run(&c, "split blue=70 green=30").unwrap();
    drop(c);

    let c = setup.start(&["blue", "green"], "blue = 50\ngreen = 50");
    assert_eq!(split_of(&c), pairs(&[("blue", 50.0), ("green", 50.0)]));
    assert_eq!(revision(&c), 3);
    let record = last_audit(&c);
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("[split] changed"),
        "{record}"
    );
}

#[test]
fn removing_a_pool_without_share_keeps_the_runtime_split() {
    let setup = Setup::new("dropidle");
    let c = setup.start(&["blue", "green", "red"], "blue = 100");
    run(&c, "split blue=70 green=30").unwrap();
    drop(c);

    let c = setup.start(&["blue", "green"], "blue = 100");
    assert_eq!(split_of(&c), pairs(&[("blue", 70.0), ("green", 30.0)]));
}

#[test]
fn adding_a_pool_keeps_the_runtime_split() {
    let setup = Setup::new("add");
    let c = setup.start(&["blue", "green"], "blue = 100");
    run(&c, "split blue=70 green=30").unwrap();
    drop(c);

    let c = setup.start(&["blue", "green", "red"], "blue = 100");
    assert_eq!(split_of(&c), pairs(&[("blue", 70.0), ("green", 30.0)]));
    assert_eq!(
        status(&c)["split"]["red"],
        0.0,
        "the new pool is in the split at 0"
    );
}

#[test]
fn removing_a_pool_with_share_falls_back_to_the_file_split() {
    let setup = Setup::new("dropbusy");
    let c = setup.start(&["blue", "green"], "blue = 100");
    run(&c, "split blue=70 green=30").unwrap();
    run(&c, "cutover blue").unwrap(); // target: 70/30, naming green
    drop(c);

    let c = setup.start(&["blue"], "blue = 100");
    assert_eq!(split_of(&c), pairs(&[("blue", 100.0)]));
    let reason = last_audit(&c)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("pool \"green\" is gone"), "{reason}");
    let status = status(&c);
    assert!(
        status["rollback_target"].is_null(),
        "a target naming a removed pool is dropped: {}",
        status["rollback_target"]
    );
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_revisions_continue() {
    let setup = Setup::new("corrupt");
    let c = setup.start(&["blue", "green"], "blue = 100");
    run(&c, "split blue=70 green=30").unwrap();
    run(&c, "split blue=60 green=40").unwrap();
    drop(c);
    std::fs::write(
        setup.state_dir().join("state.json"),
        "{\"revision\": 3, tor",
    )
    .unwrap();
    // A temp file left by a writer killed mid-save (no such process).
    let stale = setup.state_dir().join(".state.json.tmp.4194305");
    std::fs::write(&stale, "{").unwrap();

    let c = setup.start(&["blue", "green"], "blue = 100");
    assert_eq!(split_of(&c), pairs(&[("blue", 100.0)]), "the file's split");
    assert_eq!(revision(&c), 4, "numbering continues from the audit log");
    let kept = std::fs::read_to_string(setup.state_dir().join("state.json.corrupt")).unwrap();
    assert_eq!(kept, "{\"revision\": 3, tor");
    assert!(!stale.exists(), "stale temp file removed");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(setup.state_dir().join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["revision"], 4);
}

#[test]
fn rollback_restores_the_split_before_the_last_raise_once() {
    let setup = Setup::new("rollback");
    let c = setup.start(&["blue", "green"], "blue = 100");
    assert!(run(&c, "rollback")
        .unwrap_err()
        .contains("nothing to roll back to"));
    run(&c, "split blue=90 green=10").unwrap();
    run(&c, "cutover green").unwrap();
    let answer = run(&c, "rollback green is slow").unwrap();
    assert_eq!(answer["split"]["blue"], 90.0);
    let record = last_audit(&c);
    assert_eq!(record["reason"], "green is slow");
    assert_eq!(record["uid"], 1000);
    assert!(run(&c, "rollback").is_err(), "the target is used up");

    // `undo` goes back to any recorded revision, and is itself a raise.
    let answer = run(&c, "undo 3").unwrap();
    assert_eq!(answer["split"]["green"], 100.0);
    assert_eq!(run(&c, "rollback").unwrap()["split"]["blue"], 90.0);
}

#[test]
fn reload_keeps_settings_that_need_a_restart_and_skips_an_identical_file() {
    let setup = Setup::new("reload");
    let c = setup.start(&["blue", "green"], "blue = 100");
    let answer = reload(&c, ChangeOrigin::Signal).unwrap();
    assert_eq!(answer["changed"], false);
    assert_eq!(revision(&c), 1);

    // Moving the state dir needs a restart: the running one stays in use.
    let text = std::fs::read_to_string(setup.config_path())
        .unwrap()
        .replace("/state\"", "/elsewhere\"")
        .replace("blue = 100", "blue = 50\ngreen = 50");
    std::fs::write(setup.config_path(), text).unwrap();
    let answer = reload(&c, ChangeOrigin::Signal).unwrap();
    assert_eq!(answer["revision"], 2);
    assert_eq!(answer["changed"], true);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("needs a restart"),
        "{answer}"
    );
    assert_eq!(c.config().admin.state_dir, setup.state_dir());
    assert!(!setup.dir.join("elsewhere").exists());
    assert_eq!(last_audit(&c)["origin"], "signal");

    std::fs::write(setup.config_path(), "[pools.blue]\nbackends = 3\n").unwrap();
    let error = reload(&c, ChangeOrigin::File).unwrap_err();
    assert!(error.contains("pools.blue.backends"), "{error}");
    assert_eq!(split_of(&c), pairs(&[("blue", 50.0), ("green", 50.0)]));
}

#[test]
fn an_expired_rollback_target_is_refused() {
    let setup = Setup::new("expired");
    let c = setup.start(&["blue", "green"], "blue = 100");
    run(&c, "cutover green").unwrap();
    drop(c);
    // Age the target past the default 24 h TTL.
    let path = setup.state_dir().join("state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    state["rollback_target"]["set_at_ms"] = Value::from(0);
    std::fs::write(&path, state.to_string()).unwrap();

    let c = setup.start(&["blue", "green"], "blue = 100");
    assert_eq!(status(&c)["rollback_target"]["expired"], true);
    let error = run(&c, "rollback").unwrap_err();
    assert!(
        error.contains("older than guard.rollback_target_ttl"),
        "{error}"
    );
    assert_eq!(split_of(&c), pairs(&[("green", 100.0)]));
}

#[test]
fn the_watchers_catch_up_reload_counts_only_a_changed_file() {
    use std::sync::atomic::Ordering;
    let setup = Setup::new("catchup");
    let c = setup.start(&["blue", "green"], "blue = 100");
    c.reload_if_changed(ChangeOrigin::File, Now::read());
    assert_eq!(c.shared().reloads_ok.load(Ordering::Relaxed), 0);
    assert_eq!(revision(&c), 1);

    let text = std::fs::read_to_string(setup.config_path())
        .unwrap()
        .replace("blue = 100", "blue = 50\ngreen = 50");
    std::fs::write(setup.config_path(), text).unwrap();
    c.reload_if_changed(ChangeOrigin::File, Now::read());
    assert_eq!(c.shared().reloads_ok.load(Ordering::Relaxed), 1);
    assert_eq!(split_of(&c), pairs(&[("blue", 50.0), ("green", 50.0)]));
}

#[test]
fn a_rollback_target_ages_past_its_ttl_by_the_time_passed_in() {
    let setup = Setup::new("ttl");
    let c = setup.start(&["blue", "green"], "blue = 100");
    let t0 = Now::read();
    run_at(&c, "cutover green", t0).unwrap();
    let day = Duration::from_secs(24 * 3600);

    let late = t0.plus(day + Duration::from_secs(1));
    let status = apply_at(&c, Command::Status, late).unwrap();
    assert_eq!(status["rollback_target"]["expired"], true);
    assert_eq!(status["rollback_target"]["age_s"], 24 * 3600 + 1);
    let refusal = c.apply(Command::Rollback(None), ADMIN, late).unwrap_err();
    assert_eq!(refusal.kind(), "target_expired");
    assert_eq!(
        refusal.to_string(),
        "the rollback target (revision 1) is older than guard.rollback_target_ttl"
    );

    // A moment inside the TTL the same target is still good.
    let inside = t0.plus(day - Duration::from_secs(1));
    let answer = run_at(&c, "rollback", inside).unwrap();
    assert_eq!(answer["split"]["blue"], 100.0);
}

#[test]
fn a_canary_step_holds_for_its_time_and_then_walks_on() {
    let setup = Setup::new("hold");
    let c = setup.start_with(
        &["blue", "green"],
        "blue = 100",
        "[guard]\nmin_requests = 1\n\
         [canary]\nsteps = [{ weight = 10, hold = \"1m\" }, { weight = 100 }]\n",
    );
    c.shared().set_health_ready();
    let t0 = Now::read();
    run_at(&c, "canary start green", t0).unwrap();
    let canary = |now: Now| apply_at(&c, Command::Status, now).unwrap()["canary"].clone();
    assert_eq!(canary(t0)["hold_remaining_s"], 60.0);
    assert_eq!(
        canary(t0.plus(Duration::from_secs(20)))["hold_remaining_s"],
        40.0
    );

    // Pausing and resuming restarts the hold at the resume's time.
    let resumed = t0.plus(Duration::from_secs(30));
    run_at(&c, "canary pause", t0.plus(Duration::from_secs(25))).unwrap();
    run_at(&c, "canary resume", resumed).unwrap();
    assert_eq!(canary(resumed)["hold_remaining_s"], 60.0);

    // Healthy traffic to green; the guard judges at the times given.
    let serve = |now: Now| {
        let table = c.shared().table_arc();
        let green = table.pool("green").unwrap();
        for _ in 0..500 {
            green.stats.record(
                now.mono.0,
                crate::stats::StatusClass::S2xx,
                Duration::from_millis(1),
            );
        }
    };
    let before = resumed.plus(Duration::from_secs(59));
    serve(before);
    c.guard_tick(before);
    assert_eq!(
        split_of(&c),
        pairs(&[("blue", 90.0), ("green", 10.0)]),
        "still holding"
    );

    let after = resumed.plus(Duration::from_secs(61));
    serve(after);
    c.guard_tick(after);
    assert_eq!(
        split_of(&c),
        pairs(&[("green", 100.0)]),
        "promoted after the hold"
    );
    assert!(canary(after).is_null(), "the run is over");
    assert_eq!(last_audit(&c)["origin"], "canary");
}

#[test]
fn every_refusal_names_its_kind() {
    let setup = Setup::new("kinds");
    let c = setup.start(&["blue", "green"], "blue = 100");
    let kind = |line: &str| {
        let command = Command::parse(line).unwrap();
        c.apply(command, ADMIN, Now::read()).unwrap_err().kind()
    };
    assert_eq!(kind("split blue=50 purple=50"), "no_such_pool");
    assert_eq!(kind("split blue=50 green=40"), "bad_split");
    assert_eq!(kind("drain blue 10.9.9.9:1"), "no_such_backend");
    assert_eq!(kind("undo 99"), "no_such_revision");
    assert_eq!(kind("rollback"), "nothing_to_roll_back");
    assert_eq!(kind("canary pause"), "no_canary");
    assert_eq!(kind("guard resume"), "unchanged");
    run(&c, "canary start green").unwrap();
    assert_eq!(kind("canary start green"), "conflict");
    c.hand_over(Now::read());
    assert_eq!(kind("canary abort"), "handing_over");
}

#[test]
fn canary_steps_keep_the_rollback_target_of_the_split_before_the_canary() {
    let setup = Setup::new("target-rev");
    let c = setup.start_with(
        &["blue", "green"],
        "blue = 100",
        "[guard]\nmin_requests = 1\n\
         [canary]\nsteps = [{ weight = 10, hold = \"1s\" }, { weight = 50, hold = \"1s\" }, { weight = 100 }]\n",
    );
    c.shared().set_health_ready();
    let before = revision(&c);
    let t0 = Now::read();
    run_at(&c, "canary start green", t0).unwrap();
    let serve = |now: Now| {
        let table = c.shared().table_arc();
        for _ in 0..50 {
            table.pool("green").unwrap().stats.record(
                now.mono.0,
                crate::stats::StatusClass::S2xx,
                Duration::from_millis(1),
            );
        }
    };
    // First tick zeroes the watch; the second sees 50 good requests after the hold.
    c.guard_tick(t0.plus(Duration::from_millis(100)));
    serve(t0.plus(Duration::from_secs(2)));
    c.guard_tick(t0.plus(Duration::from_secs(2)));
    assert_eq!(split_of(&c), pairs(&[("blue", 50.0), ("green", 50.0)]));
    let target = &status(&c)["rollback_target"];
    assert_eq!(target["split"]["blue"], 100.0, "{target}");
    assert_eq!(
        target["revision"].as_u64(),
        Some(before),
        "the target is the split of the revision before the canary: {target}"
    );
}

#[test]
fn a_forced_cutover_to_a_dead_pool_says_the_guard_still_acts() {
    let setup = Setup::new("forced");
    let c = setup.start(&["blue", "green"], "blue = 100");
    run(&c, "drain green 127.0.0.1:9002").unwrap();
    let refused = run(&c, "cutover green").unwrap_err();
    assert!(refused.contains("--force"), "{refused}");
    let forced = run(&c, "cutover --force green").unwrap();
    let message = forced["message"].as_str().unwrap();
    assert!(message.contains("forced"), "{message}");
    assert!(
        message.contains("the guard still watches green") && message.contains("ctl guard pause"),
        "{message}"
    );
}

#[test]
fn draining_the_last_usable_backend_of_a_pool_with_traffic_needs_force() {
    let setup = Setup::new("lastdrain");
    let c = setup.start(&["blue", "green"], "blue = 100");
    // green has no share: draining its only backend is harmless.
    run(&c, "drain green 127.0.0.1:9002").unwrap();
    let refused = c
        .apply(
            Command::parse("drain blue 127.0.0.1:9001").unwrap(),
            ADMIN,
            Now::read(),
        )
        .unwrap_err();
    assert_eq!(refused.kind(), "last_backend");
    assert_eq!(
        refused.to_string(),
        "127.0.0.1:9001 is the last usable backend of pool blue, which has a 100% share: \
         every request to blue would get 503; add --force to drain it anyway"
    );
    let forced = run(&c, "drain --force blue 127.0.0.1:9001").unwrap();
    assert_eq!(forced["ok"], true);
    assert_eq!(
        last_audit(&c)["command"],
        "drain --force blue 127.0.0.1:9001"
    );
    // Now a cutover to green says why green is unusable: drained, not failing.
    let dead = run(&c, "cutover green").unwrap_err();
    assert_eq!(
        dead,
        "pool green has no usable backend (every backend is drained); add --force to do it anyway"
    );
}

#[test]
fn a_reload_says_what_changed_and_what_waits_for_a_restart() {
    let setup = Setup::new("reloaddiff");
    let c = setup.start(&["blue", "green"], "blue = 100");
    let text = std::fs::read_to_string(setup.config_path()).unwrap();
    let changed = text.replace(
        "backends = [\"127.0.0.1:9002\"]",
        "backends = [{ addr = \"127.0.0.1:9002\", weight = 3 }, \"127.0.0.1:9010\"]",
    ) + "[guard]\nmax_error_rate = 2.0\n";
    std::fs::write(setup.config_path(), &changed).unwrap();
    let answer = reload(&c, ChangeOrigin::File).unwrap();
    let message = answer["message"].as_str().unwrap();
    assert_eq!(
        message,
        "config reloaded (green: backends added: 127.0.0.1:9010; green: weight of 127.0.0.1:9002 1 -> 3; \
         [guard] changed); runtime split kept"
    );
    assert_eq!(last_audit(&c)["reason"], message);
    // Only a restart-only key changed: not "unchanged".
    std::fs::write(
        setup.config_path(),
        changed.replacen("[admin]\n", "[server]\nthreads = 3\n[admin]\n", 1),
    )
    .unwrap();
    let answer = reload(&c, ChangeOrigin::File).unwrap();
    assert_eq!(
        answer["message"],
        "nothing to apply now; needs a restart to take effect: server.threads"
    );
}
