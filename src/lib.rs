//! switchyard — an edge reverse proxy that switches live HTTP traffic between
//! deployment pools (blue/green, splits, canaries) and switches it back by
//! itself when the new pool misbehaves.
//!
//! Module map, in the order a request meets them: the data plane first, then
//! the control plane that changes what the data plane reads, then the process
//! around both. Imports run from the later layers to the earlier ones
//! (`tests/architecture.rs` checks it, and that no two files import each other
//! round a circle).
//!
//! **Foundation** (no knowledge of the moving parts)
//!
//! | module     | owns |
//! |------------|------|
//! | `config`   | TOML → validated [`config::Config`]; each section's reader owns its keys, every error has its key path |
//! | `protocol` | the admin vocabulary shared by the server and `ctl`: commands, typed answers and events, line framing |
//! | `clock`    | time as a value: `Now { wall, mono }` passed into every decision |
//! | `stats`    | per-pool inline counters, latency histogram, sliding window (atomics only) |
//! | `word_ring` | the lock-free single-producer ring of whole byte records under the access log's and the mirror's per-thread queues |
//! | `tls`      | `material` (PEM, keys, CAs: a leaf), `upstream` (client settings), `listeners` (SNI, reload) |
//!
//! **Data plane** (per request: no lock, no allocation, no call out)
//!
//! | module      | owns |
//! |-------------|------|
//! | `dataplane` | `accept` (the front door: HTTP/1.1, plain or TLS → `fastpath`, h2/h2c → `pingora`), `head_limit` + `head_gate` (every request head within `max_request_head` and `request_head_timeout`, before either path parses it), `h2_watchdog` (the same deadline for HTTP/2 header blocks), `framing` (the one HTTP/1.1 framing rule set both paths apply, RFC 9112; strict chunked scanner; upstream responses), `strict_upstream` (pingora's plaintext HTTP/1.1 upstream sockets: responses read through `framing::response`, their own idle pool), `exchange` (the one pick / retry / passive-health / record policy both paths call), `answers` (the 502/503 bytes), `log_fields` (a pingora request's access-log fields), `fastpath/` (HTTP/1.1, plain or TLS, without pingora's HTTP layer; `client` is the stream kind), `pingora` (the `ProxyHttp` adapter) |
//! | `routing`   | the immutable routing table; pool and backend choice per request |
//! | `health`    | `verdict` (per-backend atomics), `ejection` (pure passive ejection), `probe`, `service` |
//! | `shared`    | what every service shares: the routing table (one publisher), readiness, counters |
//! | `access_log` | one line per request: per-thread rings of formatted lines, drained by a writer thread |
//! | `mirror`    | `[mirror]`: copies of live requests handed off per thread (`tap`), drained in batches (`queue`) by a background service that pipelines them per connection (`service`, `send`, `answers`), counted apart (`route`), judged before a cutover (`verdict`) |
//!
//! **Control plane** (the one writer)
//!
//! | module    | owns |
//! |-----------|------|
//! | `guard`   | pure decision code: the sequential tests, the verdict, canary step arithmetic |
//! | `control` | the controller (`apply`, `commit`), one plan per command (`change`), canary runs, the judge's tick (on the fleet's sums on the leader), reconciliation, status, typed refusals, state file, audit log; fleet mode's side (`fleet`, `joining`, `writeback`, `replay`) |
//! | `cluster` | fleet mode on etcd: `client` (connect: TLS, auth, timeouts, backoff), `keys`, `store` (one change = one transaction, compared on the revision it was planned on, and on the leader's fence for automation), `watch` (from the last applied revision), the `Role` and `Fence` of the election; `members` (lease-bound member entry with per-pool counts), `election` (the leader, its fence, the fleet's sums for the judge), `fleet_counts` (summing members across restarts and exits), `leader_silence` (a silent leader's lease revoked by a follower) |
//! | `notify`  | webhooks: bounded queue, one ordered worker per URL, retries |
//! | `reload`  | config file watcher and SIGHUP → controller reload |
//! | `discovery` | `{ dns = … }` backends: resolves names off the request path (`resolve`), publishes changed answers through the controller (`service`) |
//! | `admin`   | the admin Unix socket, the admin HTTP endpoints, `/metrics`, the live dashboard on `/` |
//!
//! **Process and command line**
//!
//! | module    | owns |
//! |-----------|------|
//! | `process` | `server` (one pingora server and its services), `lifecycle` (readiness, signals, drain, upgrade, systemd), `listening` (procfs), `logging` (env_logger; peer-triggered TLS lines demoted or rate-limited) |
//! | `cli`, `ctl` | the command line; `ctl` sends one command and prints the typed answer |
//! | `origin`, `demo` | a small HTTP origin for the demo, tests and benchmarks; `switchyard demo` |

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dataplane;
pub mod demo;
pub mod discovery;
pub mod guard;
pub mod health;
pub mod mirror;
pub mod notify;
pub mod origin;
pub mod process;
pub mod protocol;
pub mod reload;
pub mod routing;
pub mod shared;
pub mod stats;
pub mod tls;
pub(crate) mod word_ring;
