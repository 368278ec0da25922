//! Traffic mirroring (SPEC §11): a copy of a share of live requests goes to
//! a pool as well, off the client's path; the copies' answers are read,
//! counted apart and thrown away, so a pool can be judged on live traffic
//! before it gets any.
//!
//! - [`route`]: the mirror as the routing table carries it (pool, share,
//!   methods, `max_body`) and the copies' own statistics and error-rate test
//! - [`tap`]: the request path's hand-off — a copy into this thread's ring,
//!   never waiting (a full ring drops the copy and counts it)
//! - [`queue`]: a request thread's ring of copies, drained in batches
//! - [`service`]: drains the rings, a fixed set of workers sends the batches
//! - [`send`]: a batch pipelined on one connection to one backend, the
//!   answers read in order and discarded
//! - [`answers`]: an answer's status and framing, parsed no further
//! - [`verdict`]: `cutover` / `canary start` to a pool whose copies fail the
//!   guard's error-rate test are refused unless forced

pub mod answers;
pub mod queue;
pub mod route;
pub mod send;
pub mod service;
pub mod tap;
pub mod verdict;
