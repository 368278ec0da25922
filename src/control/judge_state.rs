//! What the judge keeps between ticks: the watch's tests and what it last
//! decided. Its own file so `status` and the controller can hold it without
//! importing the judge (which acts through the controller).

use crate::clock::MonoMs;
use crate::guard::watch::WatchTests;
use crate::guard::Verdict;
use crate::protocol::answer::LastDecision;

/// What the judge keeps between ticks (in memory: after a restart a watch
/// starts its counts afresh).
#[derive(Debug, Default)]
pub struct JudgeState {
    /// The watch the tests belong to: `(pool, since_ms, epoch)`, where
    /// `epoch` is the fleet leadership whose summed counts the tests read
    /// (0: this process's own counts). A new leader starts afresh.
    pub(super) key: Option<(String, u64, i64)>,
    pub(super) tests: Option<WatchTests>,
    pub(super) last_tick: MonoMs,
    /// For `status`: pass / insufficient / trip.
    pub(super) verdict: Option<Verdict>,
    /// For `status`: what the canary step waits for.
    pub(super) waiting_for: Option<String>,
    pub(super) last_decision: Option<LastDecision>,
    /// In observe mode a watch reports its trip once.
    pub(super) reported: bool,
}

impl JudgeState {
    pub(super) fn clear(&mut self) {
        self.key = None;
        self.tests = None;
        self.verdict = None;
        self.waiting_for = None;
        self.reported = false;
    }
}
