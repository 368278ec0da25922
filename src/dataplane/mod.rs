//! The data plane: one client request's path, in order.
//!
//! - [`accept`]: the front door. TLS and h2c connections go to pingora's
//!   own HTTP stack; plain ones get a task of their own and the fast path
//!   first.
//! - [`fastpath`]: plain HTTP/1.1 requests proxied without pingora's HTTP
//!   layer; whatever it doesn't fully understand is handed to pingora.
//! - [`pingora`]: the `ProxyHttp` adapter that serves everything else.
//! - [`exchange`]: the one policy both paths call: pick a backend with
//!   fallback, the connect-retry decision, passive health from the outcome,
//!   recording the outcome in the pool's statistics.
//! - [`answers`]: the 502/503 answers of both paths.
//! - [`framing`]: the one HTTP/1.1 framing rule set (RFC 9112) both paths
//!   apply, and the strict chunked scanner.
//! - [`head_limit`]: the request-head limits (size, deadline) and their
//!   400/408/431 answers, the same on both paths; [`head_gate`] enforces
//!   them in front of pingora's HTTP/1 session, plain and TLS.
//! - [`h2_watchdog`]: `request_head_timeout` for HTTP/2 header blocks
//!   (HEADERS + CONTINUATION), read off the frames before pingora's h2.
//! - [`strict_upstream`]: pingora's plaintext HTTP/1.1 upstream
//!   connections, their responses read through the framing rules
//!   ([`framing::response`]); its own idle pool.
//! - [`log_fields`]: the access log fields of a request on pingora's path.
//!
//! Nothing here writes shared state other than the pool statistics and
//! the backends' passive health; the table is read with one `ArcSwap` load
//! per request.

pub mod accept;
pub mod answers;
pub mod exchange;
pub mod fastpath;
pub mod framing;
pub mod h2_watchdog;
pub mod head_gate;
pub mod head_limit;
pub mod log_fields;
pub mod pingora;
pub mod strict_upstream;
pub(crate) mod wrapped;
