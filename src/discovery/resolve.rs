//! One DNS lookup: a name → its A and AAAA addresses and how long the
//! answer may be kept, with failures sorted into the kinds an operator acts
//! on (timeout, no such name, no address, server failure, unreachable).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;

use crate::config::DiscoveryConfig;

/// A lookup that gave no usable answer. The last good set stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no such name (NXDOMAIN)")]
    NoSuchName,
    #[error("the name has no A or AAAA record")]
    NoAddress,
    #[error("the DNS server answered {0}")]
    ServerFailure(String),
    #[error("cannot reach the DNS server: {0}")]
    Unreachable(String),
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
}

impl LookupError {
    /// A short label for logs: one log line per change of kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LookupError::Timeout(_) => "timeout",
            LookupError::NoSuchName => "nxdomain",
            LookupError::NoAddress => "no_address",
            LookupError::ServerFailure(_) => "server_failure",
            LookupError::Unreachable(_) => "unreachable",
            LookupError::Setup(_) => "setup",
        }
    }

    /// A negative answer (the name exists nowhere, or has no address):
    /// what `allow_empty = true` accepts as an empty set.
    pub fn is_empty_answer(&self) -> bool {
        matches!(self, LookupError::NoSuchName | LookupError::NoAddress)
    }
}

/// A good answer: sorted, without duplicates, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    /// The shortest TTL among the records.
    pub ttl: Duration,
}

/// The resolver of one `[discovery]` section: rebuilt when the section
/// changes on reload.
pub struct Resolver {
    inner: TokioResolver,
    timeout: Duration,
    /// The section it was built from.
    pub built_from: DiscoveryConfig,
}

impl Resolver {
    /// Explicit `nameservers` (UDP, then TCP for truncated answers), else
    /// the system's resolv.conf. Never reads /etc/hosts: a `dns` backend
    /// follows DNS. No cache: every lookup asks a server, so a change is
    /// seen at the next lookup, not when a cached copy expires.
    pub fn new(config: &DiscoveryConfig) -> Result<Resolver, LookupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| LookupError::Setup(format!("reading the system's resolv.conf: {e}")))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.use_hosts_file = ResolveHosts::Never;
        options.cache_size = 0;
        options.timeout = config.timeout;
        options.attempts = 1;
        let inner = builder
            .build()
            .map_err(|e| LookupError::Setup(e.to_string()))?;
        Ok(Resolver {
            inner,
            timeout: config.timeout,
            built_from: config.clone(),
        })
    }

    /// Every A and AAAA address of `host`, bounded by the section's timeout.
    pub async fn lookup(&self, host: &str) -> Result<Answer, LookupError> {
        // A fully qualified name: no search-list expansion for explicit
        // nameservers; the system's config keeps its search list.
        let name = if self.built_from.nameservers.is_empty() {
            host.to_string()
        } else {
            format!("{host}.")
        };
        // The cache is off, but a cleared one also drops anything a
        // concurrent lookup left there.
        self.inner.clear_cache();
        let lookup = tokio::time::timeout(self.timeout, self.inner.lookup_ip(name))
            .await
            .map_err(|_| LookupError::Timeout(self.timeout))?
            .map_err(|e| classify(&e, self.timeout))?;
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(LookupError::NoAddress);
        }
        Ok(Answer { addrs, ttl })
    }
}

fn classify(e: &NetError, timeout: Duration) -> LookupError {
    if e.is_nx_domain() {
        return LookupError::NoSuchName;
    }
    if e.is_no_records_found() {
        return LookupError::NoAddress;
    }
    match e {
        NetError::Timeout => LookupError::Timeout(timeout),
        NetError::Dns(dns) => LookupError::ServerFailure(dns.to_string()),
        other if other.is_connection_closed() => LookupError::Unreachable(other.to_string()),
        NetError::Io(io) => LookupError::Unreachable(io.to_string()),
        NetError::NoConnections => LookupError::Unreachable("no connection to any server".into()),
        other => LookupError::ServerFailure(other.to_string()),
    }
}
