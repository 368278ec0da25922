//! Time as a value. Decisions (the guard, canary holds, rollback-target
//! TTLs, passive ejection) take a [`Now`] instead of reading a clock, so
//! their tests pass any time they like without sleeping or editing files.
//!
//! Two clocks, kept apart by type so one is never compared with the other:
//! - [`WallMs`]: Unix milliseconds. Survives a restart, so it is what the
//!   persisted state stores (when a rollback target was set, when a canary
//!   step began).
//! - [`MonoMs`]: milliseconds of the process's monotonic stats clock
//!   ([`crate::stats::now_ms`]). Never jumps, so it is what in-process
//!   windows and ejection timers use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WallMs(pub u64);

/// Milliseconds on the process's monotonic stats clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoMs(pub u64);

impl WallMs {
    pub fn read() -> WallMs {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        WallMs(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: WallMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub fn plus(self, d: Duration) -> WallMs {
        WallMs(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl MonoMs {
    pub fn read() -> MonoMs {
        MonoMs(crate::stats::now_ms())
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: MonoMs) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub fn plus(self, d: Duration) -> MonoMs {
        MonoMs(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// Both clocks, read once at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall: WallMs,
    pub mono: MonoMs,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall: WallMs::read(),
            mono: MonoMs::read(),
        }
    }

    /// The same moment moved on by `d` on both clocks (for tests and
    /// simulations).
    pub fn plus(self, d: Duration) -> Now {
        Now {
            wall: self.wall.plus(d),
            mono: self.mono.plus(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_never_goes_negative() {
        let a = Now {
            wall: WallMs(5_000),
            mono: MonoMs(100),
        };
        let b = a.plus(Duration::from_millis(250));
        assert_eq!(b.wall.since(a.wall), Duration::from_millis(250));
        assert_eq!(b.mono.since(a.mono), Duration::from_millis(250));
        assert_eq!(a.wall.since(b.wall), Duration::ZERO);
        assert_eq!(a.mono.since(b.mono), Duration::ZERO);
    }

    #[test]
    fn the_wall_clock_reads_unix_time() {
        // 2020-01-01 in Unix ms: any machine running this is later.
        assert!(WallMs::read().0 > 1_577_836_800_000);
    }
}
