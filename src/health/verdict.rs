//! The per-backend health verdict the request path reads.
//!
//! Each backend has one [`BackendHealth`], shared across routing-table
//! rebuilds while the backend (pool + address) stays in the config, so a
//! reload never forgets what the checks learned. The request path reads one
//! atomic flag (`serving`); everything that changes it — check results,
//! ejections and their expiry — happens off that path, except the moment a
//! passive ejection trips (decided by [`super::ejection`]).
//!
//! States: a new backend is *unknown* and takes no traffic until it passes
//! one check; a *down* backend needs `rise` passes in a row to come back; an
//! *up* backend goes down after `fall` failures in a row.
//!
//! This knows nothing of pools or the routing table: what ejection needs to
//! know of the pool comes in through [`Peers`], which routing implements.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::ejection::{self, Policy, Record};
use crate::clock::MonoMs;
use crate::config::HealthConfig;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// What passive ejection asks of the pool a backend belongs to, only when
/// a streak reaches the threshold.
pub trait Peers {
    /// Its name, for the log line.
    fn name(&self) -> &str;
    /// How many backends it has.
    fn backend_count(&self) -> usize;
    /// How many of them are ejected right now.
    fn ejected_count(&self) -> usize;
}

#[derive(Debug)]
pub struct BackendHealth {
    /// What the request path reads: up by checks and not ejected.
    serving: AtomicBool,
    state: AtomicU8,
    passes: AtomicU32,
    fails: AtomicU32,
    /// Passive: upstream failures or 5xx in a row.
    consecutive_errors: AtomicU32,
    /// 0 = not ejected; else the `MonoMs` when the ejection ends.
    ejected_until: AtomicU64,
    /// How many times it was ejected (doubles the next ejection).
    ejections: AtomicU32,
    /// 0 = never ejected.
    last_ejected_at: AtomicU64,
}

/// 0 stands for "none" in the atomics.
fn encode(at: Option<MonoMs>) -> u64 {
    at.map_or(0, |at| at.0.max(1))
}

fn decode(raw: u64) -> Option<MonoMs> {
    (raw != 0).then_some(MonoMs(raw))
}

/// A backend's verdict as one process hands it to its successor in a
/// binary upgrade, so the successor starts with what the checks and the
/// passive ejections learned (a down backend still needs `rise` passes, an
/// ejected one stays out for the rest of its ejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    /// `None`: not checked yet.
    pub up: Option<bool>,
    /// What is left of an ejection in force, in ms (0: not ejected).
    pub ejected_for_ms: u64,
    pub ejections: u32,
}

impl BackendHealth {
    /// The verdict at `now`, to hand over.
    pub fn carry(&self, now: MonoMs) -> Carried {
        let up = match self.state.load(Ordering::Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        };
        let until = decode(self.ejected_until.load(Ordering::Relaxed));
        Carried {
            up,
            ejected_for_ms: until.map_or(0, |until| until.0.saturating_sub(now.0).max(1)),
            ejections: self.ejections.load(Ordering::Relaxed),
        }
    }

    /// Takes over a predecessor's verdict at `now` (before any check here).
    pub fn take_over(&self, carried: &Carried, now: MonoMs) {
        let state = match carried.up {
            Some(true) => UP,
            Some(false) => DOWN,
            None => UNKNOWN,
        };
        self.state.store(state, Ordering::Relaxed);
        self.ejections.store(carried.ejections, Ordering::Relaxed);
        if carried.ejected_for_ms > 0 {
            let until = now.plus(std::time::Duration::from_millis(carried.ejected_for_ms));
            self.ejected_until
                .store(encode(Some(until)), Ordering::Relaxed);
            self.last_ejected_at
                .store(encode(Some(now)), Ordering::Relaxed);
        }
        self.refresh_serving();
    }

    /// `checked`: active checks are on, so the backend starts unknown (not
    /// serving); otherwise it starts up.
    pub fn new(checked: bool) -> Self {
        BackendHealth {
            serving: AtomicBool::new(!checked),
            state: AtomicU8::new(if checked { UNKNOWN } else { UP }),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            consecutive_errors: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            last_ejected_at: AtomicU64::new(0),
        }
    }

    /// May this backend take new requests (checks pass, not ejected)?
    #[inline]
    pub fn is_up(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn state_label(&self) -> &'static str {
        if self.is_ejected() {
            return "ejected";
        }
        match self.state.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "unknown",
        }
    }

    /// Has this backend failed its checks (down) or been ejected? A backend
    /// not checked yet (unknown) has not failed.
    pub fn has_failed(&self) -> bool {
        self.is_ejected() || self.state.load(Ordering::Relaxed) == DOWN
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    fn refresh_serving(&self) {
        let serving = self.state.load(Ordering::Relaxed) == UP && !self.is_ejected();
        self.serving.store(serving, Ordering::Relaxed);
    }

    fn record(&self) -> Record {
        Record {
            until: decode(self.ejected_until.load(Ordering::Relaxed)),
            ejections: self.ejections.load(Ordering::Relaxed),
            last_ejected_at: decode(self.last_ejected_at.load(Ordering::Relaxed)),
        }
    }

    /// One active check result. Returns true if the state changed.
    pub fn check_result(&self, passed: bool, config: &HealthConfig) -> bool {
        let before = self.state.load(Ordering::Relaxed);
        if passed {
            self.fails.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            let needed = if before == UNKNOWN { 1 } else { config.rise };
            if before != UP && passes >= needed {
                self.state.store(UP, Ordering::Relaxed);
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
            if before != DOWN && fails >= config.fall {
                self.state.store(DOWN, Ordering::Relaxed);
            }
        }
        self.refresh_serving();
        before != self.state.load(Ordering::Relaxed)
    }

    /// Ends an ejection whose time is up at `now`. Returns true if it ended.
    pub fn expire_ejection(&self, now: MonoMs) -> bool {
        if ejection::is_over(&self.record(), now) {
            self.ejected_until.store(0, Ordering::Relaxed);
            self.consecutive_errors.store(0, Ordering::Relaxed);
            self.refresh_serving();
            return true;
        }
        false
    }

    /// A request to this backend succeeded (anything but a failure or 5xx).
    /// Writes only when there is a streak to reset, so healthy traffic
    /// does not bounce this cache line between workers.
    #[inline]
    pub fn observe_success(&self) {
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this backend failed upstream or answered 5xx. Ejects it
    /// when the streak reaches the threshold and the pool's cap allows; the
    /// pool is asked and the clock read only then.
    pub fn observe_failure(&self, pool: &impl Peers, config: &HealthConfig) {
        let streak = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        let policy = Policy::of(config);
        if !policy.trips_at(streak) || self.is_ejected() {
            return;
        }
        let room = policy.room(pool.backend_count(), pool.ejected_count());
        let now = MonoMs::read();
        let Some(ejected) = ejection::after_failure(self.record(), streak, room, now, &policy)
        else {
            return;
        };
        let record = ejected.record;
        self.ejections.store(record.ejections, Ordering::Relaxed);
        self.last_ejected_at
            .store(encode(record.last_ejected_at), Ordering::Relaxed);
        self.ejected_until
            .store(encode(record.until), Ordering::Relaxed);
        self.refresh_serving();
        log::warn!(
            "backend ejected for {} ms after {streak} failures in a row (pool {})",
            ejected.duration.as_millis(),
            pool.name()
        );
    }
}
