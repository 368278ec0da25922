//! Reconciliation of the saved runtime state with the config file (SPEC
//! §4), at start and on every reload: which split stays in force, which
//! drains and rollback target still make sense, and which settings only a
//! restart can change. Pure functions; the controller commits the result.

use crate::clock::WallMs;
use crate::config::{Config, Share, Split};

use super::change::{complete_split, split_problem};
use super::state::RuntimeState;
use super::transition::raise_split;

/// Do two splits give the same traffic to the same pools? Pools at 0 do
/// not count, so adding or removing an idle pool in the file is not a
/// change of its `[split]` (and does not reset the runtime split).
fn same_shares(a: &Split, b: &Split) -> bool {
    let positive = |s: &Split| {
        s.iter()
            .filter(|(_, share)| **share > Share::ZERO)
            .map(|(pool, share)| (pool.clone(), *share))
            .collect::<Vec<_>>()
    };
    positive(a) == positive(b)
}

/// A pool that `split` gives traffic to but `config` no longer has. Pools
/// with a share of 0 may go without disturbing the split.
fn removed_pool_with_share<'a>(split: &'a Split, config: &Config) -> Option<&'a str> {
    split
        .iter()
        .find(|(pool, share)| **share > Share::ZERO && !config.pools.contains_key(*pool))
        .map(|(pool, _)| pool.as_str())
}

/// Merges the config file with the saved runtime state (SPEC §4): the
/// runtime split stays unless the file's `[split]` changed since it was last
/// applied (or the saved split no longer fits the pools). Returns the state
/// and, if it differs from what was saved, why.
pub fn reconcile(
    config: &Config,
    saved: Option<RuntimeState>,
    now: WallMs,
) -> (RuntimeState, Option<String>) {
    let Some(saved) = saved else {
        let state = RuntimeState {
            revision: 0,
            split: config.split.clone(),
            file_split: config.split.clone(),
            drained: Default::default(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
            tripped: None,
            canary: None,
            stopped_at_ms: None,
            fleet_mod_revision: 0,
        };
        return (state, Some("initial split from the config file".into()));
    };
    let mut state = saved.clone();
    let mut reasons = Vec::new();
    // A drained address of a `dns` backend may be between answers: its
    // drain lasts while the pool has `dns` backends.
    state.drained.retain(|(pool, backend)| {
        config.pools.get(pool).is_some_and(|p| {
            p.backends.iter().any(|b| &b.name == backend)
                || (!p.dns.is_empty() && backend.parse::<std::net::SocketAddr>().is_ok())
        })
    });
    if state.drained != saved.drained {
        reasons.push("drains of removed backends dropped".to_string());
    }
    let runtime_split = complete_split(config.pools.keys().cloned(), &saved.split);
    if !same_shares(&saved.file_split, &config.split) {
        reasons.push("the config file's [split] changed".into());
        state.split = config.split.clone();
    } else if let Some(problem) = removed_pool_with_share(&saved.split, config)
        .map(|p| format!("pool \"{p}\" is gone"))
        .or_else(|| split_problem(&runtime_split, config).map(|p| p.to_string()))
    {
        reasons.push(format!(
            "the runtime split no longer fits the config ({problem}); using the file's"
        ));
        state.split = config.split.clone();
    } else {
        state.split = runtime_split;
    }
    state.file_split = config.split.clone();
    let new_split = std::mem::replace(&mut state.split, saved.split.clone());
    raise_split(&mut state, new_split, now);
    // A target that gives traffic to a pool the file no longer has could
    // never be restored; better none than a rollback that fails when needed.
    if let Some(pool) = state
        .rollback_target
        .as_ref()
        .and_then(|t| removed_pool_with_share(&t.split, config))
    {
        reasons.push(format!("rollback target dropped (pool \"{pool}\" is gone)"));
        state.rollback_target = None;
    }
    if state.split != saved.split && !reasons.is_empty() {
        // already explained
    } else if state.split != saved.split {
        reasons.push("split adjusted to the config's pools".into());
    }
    let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    (state, reason)
}

/// Settings a running process cannot change: bound sockets, thread counts,
/// where state and audit live. `new` keeps the running values for them (so
/// the config in force describes the process as it runs); the names of the
/// ones the file changed are returned for a warning.
pub fn keep_restart_only_settings(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // Keeps the running value of one field, noting its name if it differed.
    macro_rules! keep {
        ($new:expr, $old:expr, $name:expr) => {
            if $new != $old {
                changed.push($name);
                $new = $old.clone();
            }
        };
    }
    keep!(
        new.admin,
        running.admin,
        "[admin] (socket, http, state_dir)"
    );
    let (old, server) = (&running.server, &mut new.server);
    keep!(server.listen, old.listen, "server.listen");
    keep!(server.h2c, old.h2c, "server.h2c");
    keep!(server.threads, old.threads, "server.threads");
    keep!(
        server.upstream_keepalive_pool,
        old.upstream_keepalive_pool,
        "server.upstream_keepalive_pool"
    );
    keep!(server.grace_period, old.grace_period, "server.grace_period");
    // HTTP/2 announces it in its SETTINGS, fixed when the proxy service
    // is built; one value for every path, so HTTP/1.1 keeps it too.
    keep!(
        server.max_request_head,
        old.max_request_head,
        "server.max_request_head"
    );
    // Listeners and their certificate files are fixed at start; the files'
    // contents are re-read whenever they change.
    keep!(server.tls, old.tls, "[[server.tls]]");
    keep!(new.access_log, running.access_log, "[access_log]");
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Share};
    use std::path::Path;

    fn config(split: &str) -> Config {
        let text = format!(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.green]\nbackends = [\"127.0.0.1:9002\"]\n[split]\n{split}\n"
        );
        config::parse(&text, Path::new("/tmp")).unwrap()
    }

    fn split(blue: u16, green: u16) -> Split {
        [
            ("blue".to_string(), Share(blue * 100)),
            ("green".to_string(), Share(green * 100)),
        ]
        .into()
    }

    #[test]
    fn first_start_takes_the_file_split() {
        let (state, reason) = reconcile(&config("blue = 100"), None, WallMs(1));
        assert_eq!(state.split, split(100, 0));
        assert!(reason.is_some());
    }

    #[test]
    fn runtime_split_survives_while_the_file_split_is_unchanged() {
        let file = config("blue = 100");
        let saved = RuntimeState {
            revision: 9,
            split: split(90, 10),
            file_split: split(100, 0),
            drained: Default::default(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
            tripped: None,
            canary: None,
            stopped_at_ms: None,
            fleet_mod_revision: 0,
        };
        let (state, reason) = reconcile(&file, Some(saved.clone()), WallMs(1));
        assert_eq!(state.split, split(90, 10));
        assert_eq!(reason, None);
        assert_eq!(state.revision, 9);
    }

    #[test]
    fn a_changed_file_split_wins() {
        let file = config("blue = 50\ngreen = 50");
        let saved = RuntimeState {
            revision: 9,
            split: split(90, 10),
            file_split: split(100, 0),
            drained: [("blue".to_string(), "10.9.9.9:1".to_string())].into(),
            rollback_target: None,
            watch: None,
            guard_paused: false,
            tripped: None,
            canary: None,
            stopped_at_ms: None,
            fleet_mod_revision: 0,
        };
        let (state, reason) = reconcile(&file, Some(saved), WallMs(1));
        assert_eq!(state.split, split(50, 50));
        assert_eq!(state.file_split, split(50, 50));
        assert!(
            state.drained.is_empty(),
            "drain of a backend not in the file dropped"
        );
        assert!(reason.unwrap().contains("[split] changed"));
        assert!(
            state.rollback_target.is_some(),
            "green rose: 90/10 is the target"
        );
    }
}
