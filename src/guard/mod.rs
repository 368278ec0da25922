//! The guard: automatic rollback and staged canaries.
//!
//! - `decide`: the pure verdict on a watched pool's window
//! - `canary`: pure helpers for walking `[canary].steps`
//! - `sequential`: the sequential tests on counts (CUSUM on likelihood ratios)
//! - `watch`: every test of the policy for one watched pool, on counts since the change
//!
//! The state (what is watched since when, a canary in progress, paused or
//! not) lives in the controller, which is the one writer of the table: a
//! rollback the guard decides is an ordinary command with origin `guard`.

pub mod canary;
pub mod decide;
pub mod sequential;
pub mod watch;

pub use decide::{decide, Observation, Trip, Verdict};
