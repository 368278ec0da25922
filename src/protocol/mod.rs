//! The admin protocol, one module for both ends (the server's admin socket
//! and `switchyard ctl`), so the two cannot drift apart:
//!
//! - `command`: the command vocabulary, its text form and which commands
//!   change anything
//! - `answer`: the typed answers (and the webhook event body)
//! - `wire`: line framing and the client's one request
//!
//! A leaf: it uses only `config`'s share and split types.

pub mod answer;
pub mod command;
pub mod wire;

pub use command::{CanaryCommand, Command, ParseError};
