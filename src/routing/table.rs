//! The immutable routing table and how it is built.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use super::discovered::{Discovered, DnsEntry};
use super::rng::below;
use super::sticky::{sticky_bucket_map, CookieIssuer};
use crate::config::{
    Config, HealthConfig, PoolConfig, RouteMatch, Share, Split, StickyKey, UpstreamProtocol,
};
use crate::health::verdict::{BackendHealth, Peers};
use crate::mirror::route::MirrorRoute;
use crate::stats::{ms_at, now_ms, FailureKind, Instant, PoolStats, StatusClass};

/// Index of a pool in [`RoutingTable::pools`]; only meaningful with its table.
pub type PoolId = usize;

#[derive(Debug)]
pub struct Backend {
    /// The address as the operator wrote it (label in status and metrics);
    /// for a discovered address, the address itself (`10.0.0.7:8080`).
    pub name: String,
    pub addr: SocketAddr,
    /// The `{ dns = … }` backend this address was discovered for.
    pub dns: Option<String>,
    /// TLS server name of its connections and probes (empty: none).
    pub server_name: String,
    pub weight: u32,
    /// Drained by an operator: no new requests, in-flight ones finish.
    pub drained: bool,
    pub health: Arc<BackendHealth>,
    /// Built once per table so the request path only clones it.
    pub peer: HttpPeer,
}

impl Backend {
    /// May this backend take a new request?
    #[inline]
    pub fn usable(&self) -> bool {
        !self.drained && self.health.is_up()
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    /// The name as a header value, for `pool_header` (cloning it is a refcount bump).
    pub name_header: HeaderValue,
    pub share: Share,
    pub backends: Vec<Backend>,
    /// The pool's `{ dns = … }` backends, whose addresses are among `backends`.
    pub dns: Vec<DnsEntry>,
    /// Running sum of backend weights, for a weighted pick by binary search.
    cumulative_weights: Vec<u32>,
    pub stats: Arc<PoolStats>,
    /// The configuration this pool was built from; an identical one on the
    /// next build keeps `stats`.
    pub config: PoolConfig,
    /// TLS client settings of this pool's health probes (`tls = true` only).
    pub probe_tls: Option<Arc<pingora::tls::ClientConfig>>,
}

impl Pool {
    /// A weighted random backend that may take a request, other than `exclude`
    /// (the one that just failed, on a retry). `None` if no backend qualifies.
    #[inline]
    pub fn pick_backend(&self, random: u64, exclude: Option<usize>) -> Option<usize> {
        let total = *self.cumulative_weights.last()?;
        let target = below(total, random);
        let start = self.cumulative_weights.partition_point(|&c| c <= target);
        // Usually the weighted pick itself is usable; otherwise walk on to the
        // next usable backend so a down backend's share spreads over the rest.
        let n = self.backends.len();
        (0..n)
            .map(|step| (start + step) % n)
            .find(|&i| Some(i) != exclude && self.backends[i].usable())
    }

    /// One failed attempt on backend `backend` (a refused or timed-out
    /// connect, a reset, a read timeout): counted in the pool's failures and
    /// against the backend's passive health.
    pub fn count_failure(&self, backend: Option<usize>, kind: FailureKind, health: &HealthConfig) {
        self.stats.record_failure(now_ms(), kind);
        if let Some(backend) = backend.and_then(|i| self.backends.get(i)) {
            backend.health.observe_failure(self, health);
        }
    }

    /// A finished request's class and latency (since `started`) in the
    /// pool's statistics; one clock read serves the latency and the window
    /// slot. Returns the latency (for the access log).
    pub fn record_finished(&self, class: StatusClass, started: Instant) -> Duration {
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        self.stats.record(ms_at(now), class, latency);
        latency
    }

    /// Does any backend of this pool accept new requests right now?
    pub fn has_usable_backend(&self) -> bool {
        self.backends.iter().any(Backend::usable)
    }
}

/// What passive ejection asks of a backend's pool (its cap).
impl Peers for Pool {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend_count(&self) -> usize {
        self.backends.len()
    }

    fn ejected_count(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.health.is_ejected())
            .count()
    }
}

/// How a route rule reads the request, compiled for the hot path.
#[derive(Debug)]
pub(super) enum CompiledMatch {
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    Cookie {
        name: Vec<u8>,
        value: Vec<u8>,
    },
}

#[derive(Debug)]
pub(super) enum CompiledSticky {
    Header(HeaderName),
    Cookie(Vec<u8>),
    ClientIp,
}

/// What the controller keeps at runtime on top of the file: the split in
/// force, the drained backends, as `(pool, backend name)`, and the
/// addresses of the `dns` backends.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeView<'a> {
    pub revision: u64,
    pub split: &'a Split,
    pub drained: &'a BTreeSet<(String, String)>,
    pub discovered: &'a Discovered,
}

impl<'a> RuntimeView<'a> {
    pub fn new(
        revision: u64,
        split: &'a Split,
        drained: &'a BTreeSet<(String, String)>,
        discovered: &'a Discovered,
    ) -> Self {
        RuntimeView {
            revision,
            split,
            drained,
            discovered,
        }
    }
}

/// Everything a request needs to be routed; immutable once built.
#[derive(Debug)]
pub struct RoutingTable {
    pub revision: u64,
    pub pools: Vec<Pool>,
    /// The split in force (each pool's share is also on its `Pool`).
    pub split: Split,
    pub config: Arc<Config>,
    pub pool_header: Option<HeaderName>,
    /// `(cumulative share end, pool)` for pools with a share above 0.
    pub(super) split_ranges: Vec<(u16, PoolId)>,
    pub(super) routes: Vec<(CompiledMatch, PoolId)>,
    pub(super) sticky: Option<CompiledSticky>,
    /// Bucket → pool, empty when there is no stickiness.
    pub(super) sticky_map: Vec<u16>,
    /// `[sticky] issue_cookie`: new clients are given a sticky cookie.
    pub cookie_issuer: Option<CookieIssuer>,
    /// Every pool speaks plain HTTP/1.1 upstream, so a plain HTTP/1.1 client
    /// request may take the fast path (`dataplane::fastpath`). Decided for the
    /// whole table so that falling back never skews the split.
    pub fast_path: bool,
    /// `[mirror]`: which requests are copied to which pool; `None` costs
    /// the request path one branch.
    pub mirror: Option<MirrorRoute>,
}

impl RoutingTable {
    /// Builds a table from a validated config and the runtime state.
    ///
    /// Pools whose configuration is unchanged from `previous` keep their
    /// statistics; backends keep their health verdict when pool and address
    /// are unchanged. `split` must name only pools of `config` (the controller
    /// checks commands before building).
    pub fn build(
        config: Arc<Config>,
        runtime: RuntimeView<'_>,
        previous: Option<&RoutingTable>,
    ) -> RoutingTable {
        let pools: Vec<Pool> = config
            .pools
            .iter()
            .map(|(name, pool_config)| {
                let share = runtime.split.get(name).copied().unwrap_or(Share::ZERO);
                let prior = previous.and_then(|t| t.pool(name));
                build_pool(&config, name, pool_config, share, &runtime, prior)
            })
            .collect();

        let mut split_ranges = Vec::new();
        let mut end = 0u16;
        for (id, pool) in pools.iter().enumerate() {
            if pool.share.units() > 0 {
                end += pool.share.units();
                split_ranges.push((end, id));
            }
        }

        let id_of = |name: &str| pools.iter().position(|p| p.name == name);
        // Validation parsed every name and value and checked every rule's
        // pool, so each rule compiles; a rule is never skipped quietly.
        let routes = config
            .routes
            .iter()
            .filter_map(|rule| {
                let compiled = match &rule.matcher {
                    RouteMatch::Header { name, value } => CompiledMatch::Header {
                        name: name.clone(),
                        value: value.clone(),
                    },
                    RouteMatch::Cookie { name, value } => CompiledMatch::Cookie {
                        name: name.as_bytes().to_vec(),
                        value: value.as_bytes().to_vec(),
                    },
                };
                let Some(pool) = id_of(&rule.pool) else {
                    // Only a config built by hand, not by `config::parse`.
                    debug_assert!(false, "route to unknown pool {}", rule.pool);
                    log::error!("route to unknown pool {}: rule not used", rule.pool);
                    return None;
                };
                Some((compiled, pool))
            })
            .collect();

        let sticky = config.sticky.as_ref().map(|key| match key {
            StickyKey::Header(name) => CompiledSticky::Header(name.clone()),
            StickyKey::Cookie(name) => CompiledSticky::Cookie(name.as_bytes().to_vec()),
            StickyKey::ClientIp => CompiledSticky::ClientIp,
        });
        let sticky_map = if sticky.is_some() {
            let shares: Vec<(&str, u16)> = pools
                .iter()
                .map(|p| (p.name.as_str(), p.share.units()))
                .collect();
            sticky_bucket_map(&shares)
        } else {
            Vec::new()
        };

        let pool_header = config.server.pool_header.clone();

        let fast_path = config.server.fast_path
            && config.pools.values().all(|pool| {
                !pool.upstream.tls && pool.upstream.protocol != UpstreamProtocol::Http2
            });

        // Validation checked the pool; the copies' statistics stay while
        // the mirror pool does.
        let mirror = config.mirror.as_ref().and_then(|m| {
            let pool = id_of(&m.pool)?;
            let previous = previous.and_then(|t| t.mirror.as_ref());
            Some(MirrorRoute::new(m, pool, config.guard.window, previous))
        });

        RoutingTable {
            fast_path,
            mirror,
            revision: runtime.revision,
            split: runtime.split.clone(),
            pools,
            pool_header,
            split_ranges,
            routes,
            sticky,
            sticky_map,
            cookie_issuer: config
                .sticky_cookie
                .as_ref()
                .map(|c| CookieIssuer::new(&c.name, c.max_age.as_secs())),
            config,
        }
    }

    /// The table of a config as its file has it: the file's split, nothing
    /// drained, revision 1 (for tests and benchmarks; the controller builds
    /// with its runtime state).
    pub fn as_written(config: Arc<Config>) -> RoutingTable {
        let split = config.split.clone();
        RoutingTable::build(
            config,
            RuntimeView {
                revision: 1,
                split: &split,
                drained: &Default::default(),
                discovered: &Default::default(),
            },
            None,
        )
    }

    /// [`RoutingTable::as_written`] straight from config text (unit tests).
    #[cfg(test)]
    pub fn from_config_text(text: &str) -> RoutingTable {
        RoutingTable::as_written(Arc::new(
            crate::config::parse(text, std::path::Path::new("/")).expect("test config is valid"),
        ))
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }
}

fn build_pool(
    config: &Config,
    name: &str,
    pool_config: &PoolConfig,
    share: Share,
    runtime: &RuntimeView<'_>,
    prior: Option<&Pool>,
) -> Pool {
    let stats = match prior {
        Some(p) if p.config == *pool_config && p.stats.window_len() == config.guard.window => {
            Arc::clone(&p.stats)
        }
        _ => Arc::new(PoolStats::new(config.guard.window)),
    };
    let upstream = &pool_config.upstream;
    let ca = crate::tls::upstream::upstream_ca(&upstream.ca).unwrap_or_else(|e| {
        log::error!("pool {name}: {e}; verifying with the system's CAs");
        None
    });
    let probe_tls = if upstream.tls {
        // Probes speak HTTP/2 only to h2-only pools; others answer HTTP/1.1.
        let alpn: &[&[u8]] = match upstream.protocol {
            UpstreamProtocol::Http2 => &[b"h2"],
            _ => &[b"http/1.1"],
        };
        match crate::tls::upstream::probe_client_config(&upstream.ca, upstream.verify, alpn) {
            Ok(config) => Some(config),
            Err(e) => {
                log::error!("pool {name}: health probes cannot use TLS: {e}");
                None
            }
        }
    } else {
        None
    };
    // Fixed backends first, then each `dns` backend's addresses; an
    // address already in the pool is not added twice.
    let fixed = pool_config.backends.iter().map(|b| Member {
        name: b.name.clone(),
        addr: b.addr,
        weight: b.weight,
        dns: None,
        server_name: pool_config.server_name(b),
    });
    let found = pool_config.dns.iter().flat_map(|dns| {
        let key = (name.to_string(), dns.name.clone());
        let server_name = pool_config.server_name_of(&dns.name);
        runtime
            .discovered
            .addrs(&key)
            .iter()
            .map(move |addr| Member {
                name: addr.to_string(),
                addr: *addr,
                weight: dns.weight,
                dns: Some(dns.name.clone()),
                server_name: server_name.clone(),
            })
            .collect::<Vec<_>>()
    });
    let mut backends: Vec<Backend> = Vec::new();
    for member in fixed.chain(found) {
        let Member {
            name: backend_name,
            addr,
            weight,
            dns,
            server_name,
        } = member;
        if backends.iter().any(|b| b.addr == addr) {
            continue;
        }
        let health = prior
            .and_then(|p| p.backends.iter().find(|old| old.addr == addr))
            .map(|old| Arc::clone(&old.health))
            .or_else(|| {
                runtime
                    .discovered
                    .warm
                    .get(&(name.to_string(), addr))
                    .cloned()
            })
            .unwrap_or_else(|| Arc::new(BackendHealth::new(config.health.enabled)));
        backends.push(Backend {
            drained: runtime
                .drained
                .contains(&(name.to_string(), backend_name.clone())),
            peer: build_peer(config, pool_config, addr, &server_name, &ca),
            name: backend_name,
            addr,
            dns,
            server_name,
            weight,
            health,
        });
    }
    let cumulative_weights = backends
        .iter()
        .scan(0u32, |sum, b| {
            *sum += b.weight;
            Some(*sum)
        })
        .collect();
    let dns = pool_config
        .dns
        .iter()
        .map(|d| DnsEntry {
            name: d.name.clone(),
            addrs: runtime
                .discovered
                .addrs(&(name.to_string(), d.name.clone()))
                .to_vec(),
            lookups: prior
                .and_then(|p| p.dns.iter().find(|old| old.name == d.name))
                .map(|old| Arc::clone(&old.lookups))
                .unwrap_or_default(),
        })
        .collect();
    Pool {
        dns,
        name: name.to_string(),
        name_header: HeaderValue::from_str(name)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-pool-name")),
        share,
        backends,
        cumulative_weights,
        stats,
        config: pool_config.clone(),
        probe_tls,
    }
}

/// One backend of a pool before it is built: fixed or discovered.
struct Member {
    name: String,
    addr: SocketAddr,
    weight: u32,
    dns: Option<String>,
    server_name: String,
}

/// An upstream peer with every timeout set explicitly (pingora's defaults
/// are "wait forever", which no edge proxy wants) and the pool's TLS and
/// protocol options.
fn build_peer(
    config: &Config,
    pool: &PoolConfig,
    addr: SocketAddr,
    server_name: &str,
    ca: &Option<Arc<pingora::protocols::tls::CaType>>,
) -> HttpPeer {
    let upstream = &pool.upstream;
    let sni = if upstream.tls {
        server_name.to_string()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, upstream.tls, sni);
    let server = &config.server;
    peer.options.connection_timeout = Some(server.connect_timeout);
    peer.options.read_timeout = Some(server.read_timeout);
    peer.options.write_timeout = Some(server.write_timeout);
    peer.options.idle_timeout = Some(server.idle_timeout);
    // Without TLS, "h2" means HTTP/2 with prior knowledge (h2c).
    peer.options.alpn = match upstream.protocol {
        UpstreamProtocol::Http1 => ALPN::H1,
        UpstreamProtocol::Http2 => ALPN::H2,
        UpstreamProtocol::Auto => ALPN::H2H1,
    };
    if upstream.tls {
        peer.options.verify_cert = upstream.verify;
        peer.options.verify_hostname = upstream.verify;
        peer.options.ca = ca.clone();
    }
    peer
}
