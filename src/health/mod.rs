//! Upstream health: the per-backend verdict the request path reads
//! ([`verdict`]), passive ejection as a pure state machine ([`ejection`]),
//! the active checks ([`service`] runs [`probe`]s), and the verdicts a
//! binary upgrade hands to the successor ([`carry`]).
//!
//! `verdict` and `ejection` are pure decision code (no routing, no shared
//! state), so routing builds on them; `service` and `probe` sit above
//! routing and read the table in force.

pub mod carry;
pub mod ejection;
pub mod probe;
pub mod service;
pub mod verdict;
