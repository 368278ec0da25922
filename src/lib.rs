//! switchyard — an edge reverse proxy that switches live HTTP traffic between
//! deployment pools (blue/green, splits, canaries) and switches it back by
//! itself when the new pool misbehaves.
//!
//! Module map (data flows top to bottom):
//!
//! | module     | owns                                                              |
//! |------------|-------------------------------------------------------------------|
//! | `cli`      | the command line: `run`, `check`, `ctl`, `demo`                  |
//! | `ctl`      | the `ctl` client: one command over the admin socket, tables or JSON |
//! | `config`   | TOML → validated [`config::Config`], every error with its key path |
//! | `server`   | assembling one process: pingora server, services                  |
//! | `lifecycle`| readiness, signals, drain-then-exit, binary upgrade, systemd notify |
//! | `listening`| which TCP addresses this process listens on (procfs), for readiness |
//! | `tls`      | certificates by SNI with hot reload, CA bundles, probe TLS settings |
//! | `control`  | commands, the controller (only writer of the table), state file, audit log |
//! | `reload`   | config file watcher and SIGHUP → controller reload                |
//! | `shared`   | the state all services share: the `ArcSwap` routing table, readiness |
//! | `routing`  | the immutable routing table; pool and backend choice per request |
//! | `proxy`    | the pingora `ProxyHttp` hooks: the request path                  |
//! | `keepalive`| plain connections: own task, fast path first, then pingora's proxy with idle waits outside its big future |
//! | `fastpath` | plain HTTP/1.1 requests proxied without pingora's HTTP layer (same routing and stats) |
//! | `guard`    | automatic rollback: pure verdict, canary steps, the evaluator tick |
//! | `notify`   | webhooks: bounded queue, one ordered worker per URL, retries     |
//! | `health`   | active checks, passive ejection, the per-backend verdict         |
//! | `stats`    | per-pool inline counters, latency histogram, sliding window      |
//! | `clock`    | time as a value: `Now { wall, mono }` passed into decisions       |
//! | `admin`    | admin HTTP endpoints, admin Unix socket and its line protocol    |
//! | `origin`   | a small HTTP origin for the demo, the tests and the benchmarks   |
//! | `demo`     | `switchyard demo`                                                 |

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dataplane;
pub mod demo;
pub mod guard;
pub mod health;
pub mod notify;
pub mod origin;
pub mod process;
pub mod protocol;
pub mod reload;
pub mod routing;
pub mod shared;
pub mod stats;
pub mod tls;
