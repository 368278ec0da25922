//! One switchyard process: assembling the pingora server and its services
//! ([`server`]), readiness, signals, drain and binary upgrade
//! ([`lifecycle`]), which addresses this process listens on
//! ([`listening`]), and its log, with the lines a peer can provoke demoted
//! or rate-limited ([`logging`]). The top of the layering: it wires
//! everything below and nothing below imports it.

pub mod lifecycle;
pub mod listening;
pub mod logging;
pub mod server;
