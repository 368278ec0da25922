//! Routing: the immutable [`RoutingTable`] and the per-request choice of pool
//! and backend.
//!
//! A table is built completely off the hot path (on start, reload, or an admin
//! command) and published with one `ArcSwap` store, so a request sees either
//! the old table or the new one, never a mix. Everything a request needs —
//! cumulative split, sticky bucket map, prebuilt upstream peers — is
//! precomputed here, so the per-request path is array lookups and one random
//! number: no lock, no allocation.

mod discovered;
mod rng;
mod select;
mod sticky;
mod table;

pub use discovered::{Discovered, DnsEntry, DnsKey, LookupRecord, Lookups};
pub use rng::fast_random;
pub use select::{cookie_value, PoolChoice, RequestHeaders};
pub use sticky::{bucket_of, sticky_bucket_map, CookieIssuer, StickyId, BUCKETS};
pub use table::{Backend, Pool, PoolId, RoutingTable, RuntimeView};
