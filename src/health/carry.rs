//! Health verdicts handed to the successor in a binary upgrade. The old
//! process writes what its checks and passive ejections know to
//! `state_dir/health.json` when it hands over; the successor takes it over
//! before its own first round of checks, so it starts warm: a backend that
//! was down still needs `rise` passes, an ejected one stays out for the
//! rest of its ejection, and the first round then refreshes the rest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::verdict::Carried;
use crate::clock::MonoMs;
use crate::routing::RoutingTable;

const FILE: &str = "health.json";

#[derive(Serialize, Deserialize)]
struct Doc {
    version: u32,
    /// `(pool, backend as written in the config, verdict)`.
    backends: Vec<(String, String, Carried)>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The verdicts of every backend of `table` at `now`, as the file's text.
pub fn snapshot(table: &RoutingTable, now: MonoMs) -> String {
    let backends = table
        .pools
        .iter()
        .flat_map(|pool| {
            pool.backends
                .iter()
                .map(|b| (pool.name.clone(), b.name.clone(), b.health.carry(now)))
        })
        .collect();
    serde_json::to_string(&Doc {
        version: 1,
        backends,
    })
    .unwrap_or_default()
}

/// Takes over the verdicts a predecessor left in `state_dir` for the
/// backends `table` still has, and removes the file (a later plain start
/// must check for itself). Returns how many were taken over.
pub fn take_over(table: &RoutingTable, state_dir: &Path, now: MonoMs) -> usize {
    let file = path(state_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(_) => return 0,
    };
    let _ = std::fs::remove_file(&file);
    let doc: Doc = match serde_json::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            log::warn!(
                "{} is not a health hand-over file ({e}); checking afresh",
                file.display()
            );
            return 0;
        }
    };
    let mut taken = 0;
    for (pool, backend, carried) in &doc.backends {
        let found = table
            .pools
            .iter()
            .filter(|p| &p.name == pool)
            .flat_map(|p| p.backends.iter())
            .find(|b| &b.name == backend);
        if let Some(b) = found {
            b.health.take_over(carried, now);
            taken += 1;
        }
    }
    taken
}

/// Removes a hand-over file a plain start finds (left by an upgrade that
/// did not complete): its verdicts are not this process's to take.
pub fn discard(state_dir: &Path) {
    let _ = std::fs::remove_file(path(state_dir));
}
