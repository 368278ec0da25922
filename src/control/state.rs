//! The runtime state that must survive reloads, restarts and upgrades:
//! revision, the split in force, the file's `[split]` as last applied,
//! drained backends, the rollback target and a canary run in progress.
//! Written atomically: a temp
//! file in the same directory, fsync, rename over the old one, fsync the
//! directory — a crash at any point leaves either the old or the new file.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::{Now, WallMs};
use crate::config::{parse_share, Share, Split};
use crate::guard::canary::CanaryRun;
use crate::protocol::answer::SplitDoc;

const FILE: &str = "state.json";

#[derive(Debug, Clone, PartialEq)]
pub struct RollbackTarget {
    pub split: Split,
    /// Unix time in milliseconds when the target was set.
    pub set_at_ms: u64,
    /// The revision whose change made this the target.
    pub revision: u64,
}

/// The pool the guard last rolled back, and when: `rollback` gives it no
/// traffic while this is younger than `guard.rollback_target_ttl`; an
/// operator's own split, cutover or canary start that raises it clears it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tripped {
    pub pool: String,
    /// Unix time in milliseconds of the trip.
    pub at_ms: u64,
}

/// The pool the guard watches after a change that raised its share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub pool: String,
    /// The pool that lost the most share: the baseline for relative limits.
    pub baseline: Option<String>,
    /// Unix time in milliseconds when the watch began.
    pub since_ms: u64,
}

/// A canary run as the state file keeps it, so that a restart or a binary
/// upgrade resumes it at its step with the hold time that was left.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedCanary {
    pub pool: String,
    pub base_split: Split,
    pub step: usize,
    pub paused: bool,
    /// Unix ms when the step in force began, less the time the step was held
    /// before it (by earlier processes): `now - held` when saved.
    pub step_started_at_ms: u64,
}

impl SavedCanary {
    pub fn of(run: &CanaryRun, now: Now) -> SavedCanary {
        let held = u64::try_from(run.held(now.mono.0).as_millis()).unwrap_or(u64::MAX);
        SavedCanary {
            pool: run.pool.clone(),
            base_split: run.base_split.clone(),
            step: run.step,
            paused: run.paused,
            step_started_at_ms: now.wall.0.saturating_sub(held),
        }
    }

    /// The run again at `now`, credited with the hold it served until the
    /// last process stopped (`stopped_at`; a process killed without a
    /// chance to say so is taken to have run until now).
    pub fn resume(&self, stopped_at: Option<WallMs>, now: Now) -> CanaryRun {
        let until = stopped_at.unwrap_or(now.wall);
        let held = until.since(WallMs(self.step_started_at_ms));
        CanaryRun {
            pool: self.pool.clone(),
            base_split: self.base_split.clone(),
            step: self.step,
            step_started_ms: now.mono.0,
            held_before_ms: u64::try_from(held.as_millis()).unwrap_or(u64::MAX),
            paused: self.paused,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeState {
    pub revision: u64,
    pub split: Split,
    /// The `[split]` of the config file when it was last applied; a file
    /// whose `[split]` differs from this one overrides the runtime split.
    pub file_split: Split,
    /// `(pool, backend as written in the config)`.
    pub drained: BTreeSet<(String, String)>,
    pub rollback_target: Option<RollbackTarget>,
    pub watch: Option<Watch>,
    /// `guard pause` in force.
    pub guard_paused: bool,
    pub tripped: Option<Tripped>,
    /// The canary run in progress, as of the last commit.
    pub canary: Option<SavedCanary>,
    /// Unix ms when the process that saved this began to stop (SIGTERM or
    /// a hand-over to a successor); `None` while it runs.
    pub stopped_at_ms: Option<u64>,
    /// Fleet mode: etcd's revision of `{prefix}/state` this state was
    /// applied from (0: none yet). The watch resumes after it, and a change
    /// is committed only if etcd's state is still at it.
    pub fleet_mod_revision: i64,
}

/// The state as JSON: the state file, and (fleet mode) the value under
/// `{prefix}/state` in etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    version: u32,
    revision: u64,
    split: SplitDoc,
    file_split: SplitDoc,
    drained: Vec<(String, String)>,
    rollback_target: Option<TargetDoc>,
    #[serde(default)]
    watch: Option<Watch>,
    #[serde(default)]
    guard_paused: bool,
    #[serde(default)]
    tripped: Option<Tripped>,
    #[serde(default)]
    canary: Option<CanaryDoc>,
    #[serde(default)]
    stopped_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    fleet_mod_revision: i64,
}

impl StateDoc {
    /// The switchyard revision this document is.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CanaryDoc {
    pool: String,
    base_split: SplitDoc,
    step: usize,
    paused: bool,
    step_started_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TargetDoc {
    split: SplitDoc,
    set_at_ms: u64,
    revision: u64,
}

pub fn split_doc(split: &Split) -> SplitDoc {
    split
        .iter()
        .map(|(k, v)| (k.clone(), v.percent()))
        .collect()
}

/// Why the state file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid state file: {source}", .path.display())]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A share in the file is not a percentage with two decimals.
    #[error("{0}")]
    Share(String),
}

fn split_from_doc(doc: &SplitDoc) -> Result<Split, LoadError> {
    doc.iter()
        .map(|(pool, percent)| {
            parse_share(*percent)
                .map(|s| (pool.clone(), s))
                .map_err(|e| LoadError::Share(e.to_string()))
        })
        .collect()
}

impl RuntimeState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// `Ok(None)` when there is no state yet (first start).
    pub fn load(state_dir: &Path) -> Result<Option<RuntimeState>, LoadError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LoadError::Read { path, source }),
        };
        let doc: StateDoc = match serde_json::from_str(&text) {
            Ok(doc) => doc,
            Err(source) => return Err(LoadError::Invalid { path, source }),
        };
        RuntimeState::from_doc(doc).map(Some)
    }

    /// The state a [`StateDoc`] describes (a share that does not parse is
    /// an error).
    pub fn from_doc(doc: StateDoc) -> Result<RuntimeState, LoadError> {
        let target = match doc.rollback_target {
            Some(t) => Some(RollbackTarget {
                split: split_from_doc(&t.split)?,
                set_at_ms: t.set_at_ms,
                revision: t.revision,
            }),
            None => None,
        };
        let canary = match doc.canary {
            Some(c) => Some(SavedCanary {
                base_split: split_from_doc(&c.base_split)?,
                pool: c.pool,
                step: c.step,
                paused: c.paused,
                step_started_at_ms: c.step_started_at_ms,
            }),
            None => None,
        };
        Ok(RuntimeState {
            revision: doc.revision,
            split: split_from_doc(&doc.split)?,
            file_split: split_from_doc(&doc.file_split)?,
            drained: doc.drained.into_iter().collect(),
            rollback_target: target,
            watch: doc.watch,
            guard_paused: doc.guard_paused,
            tripped: doc.tripped,
            canary,
            stopped_at_ms: doc.stopped_at_ms,
            fleet_mod_revision: doc.fleet_mod_revision,
        })
    }

    /// The saved state, if any; an unreadable file is renamed to
    /// `state.json.corrupt` (kept for a post-mortem, out of the next start's
    /// way) and counts as none, so the process starts from the config file.
    pub fn load_or_set_aside(state_dir: &Path) -> Option<RuntimeState> {
        match RuntimeState::load(state_dir) {
            Ok(saved) => saved,
            Err(e) => {
                let path = RuntimeState::path(state_dir);
                let kept = path.with_extension("json.corrupt");
                let _ = std::fs::rename(&path, &kept);
                log::warn!(
                    "{e}; kept it as {}, starting from the config file",
                    kept.display()
                );
                None
            }
        }
    }

    /// Atomically replaces the state file.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&self.doc()).map_err(std::io::Error::other)?;
        write_atomically(&Self::path(state_dir), text.as_bytes())
    }

    /// The state as its JSON document.
    pub fn doc(&self) -> StateDoc {
        StateDoc {
            version: 1,
            revision: self.revision,
            split: split_doc(&self.split),
            file_split: split_doc(&self.file_split),
            drained: self.drained.iter().cloned().collect(),
            rollback_target: self.rollback_target.as_ref().map(|t| TargetDoc {
                split: split_doc(&t.split),
                set_at_ms: t.set_at_ms,
                revision: t.revision,
            }),
            watch: self.watch.clone(),
            guard_paused: self.guard_paused,
            tripped: self.tripped.clone(),
            canary: self.canary.as_ref().map(|c| CanaryDoc {
                pool: c.pool.clone(),
                base_split: split_doc(&c.base_split),
                step: c.step,
                paused: c.paused,
                step_started_at_ms: c.step_started_at_ms,
            }),
            stopped_at_ms: self.stopped_at_ms,
            fleet_mod_revision: self.fleet_mod_revision,
        }
    }
}

/// temp file → fsync → rename → fsync directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let temp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes temp files that a writer killed between create and rename left
/// behind — except those of a process still running (the old process
/// during a graceful upgrade may be mid-write).
pub fn remove_stale_temp_files(state_dir: &Path) {
    let prefix = format!(".{FILE}.tmp.");
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
        });
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `blue=90 green=10` (pools with a share of 0 left out unless all are 0).
pub fn describe_split(split: &Split) -> String {
    let parts: Vec<String> = split
        .iter()
        .filter(|(_, share)| **share > Share::ZERO)
        .map(|(pool, share)| format!("{pool}={share}"))
        .collect();
    if parts.is_empty() {
        "(empty)".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pairs: &[(&str, u16)]) -> Split {
        pairs
            .iter()
            .map(|(p, s)| (p.to_string(), Share(*s)))
            .collect()
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("sy-state-{}", std::process::id()));
        let state = RuntimeState {
            revision: 42,
            split: split(&[("blue", 9999), ("green", 1)]),
            file_split: split(&[("blue", 10_000), ("green", 0)]),
            drained: [("blue".to_string(), "127.0.0.1:9001".to_string())].into(),
            rollback_target: Some(RollbackTarget {
                split: split(&[("blue", 10_000), ("green", 0)]),
                set_at_ms: 1_700_000_000_000,
                revision: 41,
            }),
            watch: Some(Watch {
                pool: "green".into(),
                baseline: Some("blue".into()),
                since_ms: 5,
            }),
            guard_paused: true,
            tripped: Some(Tripped {
                pool: "green".into(),
                at_ms: 6,
            }),
            canary: Some(SavedCanary {
                pool: "green".into(),
                base_split: split(&[("blue", 10_000), ("green", 0)]),
                step: 1,
                paused: false,
                step_started_at_ms: 7,
            }),
            stopped_at_ms: Some(8),
            fleet_mod_revision: 9,
        };
        state.save(&dir).unwrap();
        assert_eq!(RuntimeState::load(&dir).unwrap(), Some(state));
        std::fs::write(RuntimeState::path(&dir), "{ not json").unwrap();
        assert!(RuntimeState::load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(RuntimeState::load(&dir).unwrap(), None);
    }

    #[test]
    fn a_resumed_canary_is_credited_with_the_hold_served_until_the_stop() {
        use crate::clock::MonoMs;
        let run = CanaryRun {
            pool: "green".into(),
            base_split: split(&[("blue", 10_000)]),
            step: 1,
            step_started_ms: 1_000,
            held_before_ms: 500,
            paused: false,
        };
        // Saved at wall 100 000 when the step had been held 2.5 s.
        let saved_at = Now {
            wall: WallMs(100_000),
            mono: MonoMs(3_000),
        };
        let saved = SavedCanary::of(&run, saved_at);
        assert_eq!(saved.step_started_at_ms, 97_500);
        // Stopped 1 s later, started again 60 s after that.
        let later = Now {
            wall: WallMs(161_000),
            mono: MonoMs(40),
        };
        let resumed = saved.resume(Some(WallMs(101_000)), later);
        assert_eq!(resumed.held(40).as_millis(), 3_500);
        // Killed without saying when: the time down counts as held.
        let resumed = saved.resume(None, later);
        assert_eq!(resumed.held(40).as_millis(), 63_500);
    }

    #[test]
    fn a_split_is_described_by_its_pools_with_traffic() {
        let b = split(&[("blue", 9000), ("green", 1000)]);
        assert_eq!(describe_split(&b), "blue=90 green=10");
    }
}
