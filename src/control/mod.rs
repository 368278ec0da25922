//! The control plane: commands, the controller (the one writer of the
//! routing table), the persisted runtime state and the audit log.
//!
//! - `command`: the admin command vocabulary and its text form
//! - `controller`: apply a command → new table, revision, state, audit
//! - `state`: the runtime state file, written atomically
//! - `audit`: the JSON-lines audit log

pub mod audit;
pub mod command;
pub mod controller;
pub mod state;

pub use command::{ChangeOrigin, Command};
pub use controller::Controller;

#[cfg(test)]
mod tests;
