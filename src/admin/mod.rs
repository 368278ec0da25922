//! Operator-facing interfaces: the admin HTTP listener (health, readiness,
//! status, metrics, the live dashboard) and the admin Unix socket. The
//! socket's line protocol is `crate::protocol`, shared with `ctl`.

pub mod dashboard;
pub mod handover;
pub mod http;
pub mod metrics;
mod process_metrics;
pub mod socket;
