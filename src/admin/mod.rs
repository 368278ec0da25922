//! Operator-facing interfaces: the admin HTTP listener (health, readiness,
//! status, metrics) and the admin Unix socket with its line protocol.

pub mod http;
pub mod protocol;
pub mod socket;
