//! Operator-facing interfaces: the admin HTTP listener (health, readiness,
//! status, metrics).

pub mod http;
