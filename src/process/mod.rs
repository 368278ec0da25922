//! One switchyard process: assembling the pingora server and its services
//! ([`server`]), readiness, signals, drain and binary upgrade
//! ([`lifecycle`]), and which addresses this process listens on
//! ([`listening`]). The top of the layering: it wires everything below and
//! nothing below imports it.

pub mod lifecycle;
pub mod listening;
pub mod server;
