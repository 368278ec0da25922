//! The validated configuration: what the rest of switchyard consumes.
//!
//! Every value here has already been checked; code that holds a `Config`
//! never needs to re-validate it. Values the request path compares with
//! (header names and values) are held already parsed, in the types it
//! compares with, so building a routing table cannot fail on them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A traffic share in hundredths of a percent: 0..=10_000 (100.00 %).
///
/// Integer units keep 0.01 % granularity exact and make "sums to 100" an
/// integer comparison instead of a floating-point one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Share(pub u16);

impl Share {
    pub const ZERO: Share = Share(0);
    pub const FULL: Share = Share(10_000);

    /// Basis points (hundredths of a percent).
    pub fn units(self) -> u16 {
        self.0
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl std::fmt::Display for Share {
    /// `90`, `99.99`, `0.5` — no trailing zeros, as an operator would write it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.0 / 100;
        let frac = self.0 % 100;
        if frac == 0 {
            write!(f, "{whole}")
        } else if frac.is_multiple_of(10) {
            write!(f, "{whole}.{}", frac / 10)
        } else {
            write!(f, "{whole}.{frac:02}")
        }
    }
}

/// Pool name → share. Always sums to exactly `Share::FULL` once validated.
/// A `BTreeMap` so iteration order (and thus rendering, hashing) is stable.
pub type Split = BTreeMap<String, Share>;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub pools: BTreeMap<String, PoolConfig>,
    pub split: Split,
    pub sticky: Option<StickyKey>,
    /// `[sticky] issue_cookie = true` (with a `cookie:NAME` key): a client
    /// without the cookie gets one, and its bucket from then on.
    pub sticky_cookie: Option<IssueCookie>,
    pub routes: Vec<RouteRule>,
    pub health: HealthConfig,
    pub guard: GuardConfig,
    pub canary: CanaryConfig,
    pub notify: NotifyConfig,
    pub discovery: DiscoveryConfig,
    /// `[access_log]`: absent = no access log.
    pub access_log: Option<AccessLogConfig>,
    /// `[cluster]`: absent = a single instance, its state in its own file.
    pub cluster: Option<ClusterConfig>,
    /// `[mirror]`: absent = nothing is copied.
    pub mirror: Option<MirrorConfig>,
}

/// `[cluster]` (SPEC §9): a fleet sharing one runtime state through etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// etcd endpoints, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// This instance's name, unique in the fleet: its member key, and the
    /// name in audit records and `ctl cluster`.
    pub name: String,
    /// Every key of the fleet lives under this prefix (no trailing `/`).
    pub prefix: String,
    /// TTL of this member's lease (whole seconds): its member key, and its
    /// leadership, end this long after it stops renewing.
    pub lease_ttl: Duration,
    /// How often this member publishes its per-pool counts (<= 250 ms).
    pub publish_interval: Duration,
    /// Connect and per-request timeout for etcd calls.
    pub timeout: Duration,
    pub tls: Option<ClusterTls>,
    /// etcd authentication: user name, and a file holding the password.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// The defaults of the optional keys (`prefix`, `lease_ttl`,
    /// `publish_interval`, `timeout`); endpoints and name are required.
    pub fn defaults() -> ClusterConfig {
        ClusterConfig {
            endpoints: Vec::new(),
            name: String::new(),
            prefix: "/switchyard".to_string(),
            lease_ttl: Duration::from_secs(3),
            publish_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            tls: None,
            username: None,
            password_file: None,
        }
    }
}

/// TLS to etcd: a CA bundle to trust, and a client certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[mirror]` (SPEC §11): a share of the requests with one of `methods`
/// is copied to `pool` off the request path; the copies' answers are
/// discarded and counted apart from the pool's own traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// A pool of the config.
    pub pool: String,
    /// Share of the matching requests copied (0.01 % steps).
    pub percent: Share,
    /// Upper-case method names; default `GET`, `HEAD`.
    pub methods: Vec<String>,
    /// A request whose body is longer is not copied (counted as skipped).
    pub max_body: usize,
}

/// `[access_log]` (SPEC §10): one line per request, written off the
/// request path.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub path: AccessLogPath,
    pub format: AccessLogFormat,
    /// Share of requests logged (0.01 % steps); errors included or not
    /// by `errors_only`.
    pub sample: Share,
    /// Only requests the pool's error rate counts: 5xx answers and
    /// requests without an upstream answer.
    pub errors_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogPath {
    File(PathBuf),
    /// `path = "-"`.
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    /// Apache/NGINX combined, plus pool, backend and duration.
    Combined,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Plain HTTP/1.1 listeners.
    pub listen: Vec<SocketAddr>,
    /// Also accept HTTP/2 with prior knowledge (h2c) on the plain listeners.
    pub h2c: bool,
    /// Plain HTTP/1.1 requests to plain HTTP/1.1 pools skip pingora's HTTP
    /// layer (`crate::dataplane::fastpath`); off sends every request through pingora.
    pub fast_path: bool,
    /// Worker threads for the proxy service (pingora `threads`).
    pub threads: usize,
    /// If set, responses carry the serving pool's name in this header.
    pub pool_header: Option<http::HeaderName>,
    pub tls: Vec<TlsListener>,
    /// Upstream TCP connect timeout (per attempt).
    pub connect_timeout: Duration,
    /// Upstream read timeout (time between reads once connected).
    pub read_timeout: Duration,
    /// Upstream write timeout.
    pub write_timeout: Duration,
    /// How long an idle keep-alive connection is kept open: an upstream one
    /// in the pool, and a client one waiting for its next request head.
    pub idle_timeout: Duration,
    /// The largest request head accepted (request line + header fields +
    /// the blank line), on every path: over it, 431 (400 when the request
    /// line alone is longer) and the connection is closed.
    pub max_request_head: usize,
    /// A deadline for a whole request head, from its first byte: past it,
    /// 408 and the connection is closed.
    pub request_head_timeout: Duration,
    /// On SIGTERM: how long in-flight requests get to finish.
    pub grace_period: Duration,
    /// Idle upstream connections kept for reuse (across all backends).
    pub upstream_keepalive_pool: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SNI names this certificate answers for; empty = default certificate.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub socket: PathBuf,
    /// `None` when `http = ""` disables the admin HTTP listener.
    pub http: Option<SocketAddr>,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Backends with a fixed address.
    pub backends: Vec<BackendConfig>,
    /// Backends that are whatever a DNS name resolves to (`{ dns = … }`),
    /// re-resolved by `crate::discovery` off the request path.
    pub dns: Vec<DnsBackend>,
    /// How the proxy talks to this pool's backends.
    pub upstream: UpstreamConfig,
}

impl PoolConfig {
    /// Has the file given this pool any backend (fixed or DNS)? A DNS
    /// backend counts even before its name resolves.
    pub fn has_backends(&self) -> bool {
        !self.backends.is_empty() || !self.dns.is_empty()
    }

    /// The TLS server name (SNI, and the name verified) for one backend:
    /// the pool's `sni`, else the host the backend was written with, else
    /// none (an IP address).
    pub fn server_name(&self, backend: &BackendConfig) -> String {
        self.server_name_of(&backend.name)
    }

    /// [`PoolConfig::server_name`] of a backend written as `name`
    /// (`"host:port"`; for a `dns` backend, its `NAME:PORT`).
    pub fn server_name_of(&self, name: &str) -> String {
        if let Some(sni) = &self.upstream.sni {
            return sni.clone();
        }
        let host = name.rsplit_once(':').map_or(name, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<std::net::IpAddr>().is_ok() {
            String::new()
        } else {
            host.to_ascii_lowercase()
        }
    }
}

/// Protocol spoken to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (default).
    Http1,
    /// HTTP/2 only: by ALPN over TLS, with prior knowledge (h2c) in clear.
    Http2,
    /// Over TLS, ALPN offers h2 and http/1.1 and the backend chooses.
    Auto,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Connect to the backends over TLS.
    pub tls: bool,
    /// Server name sent and verified; `None` = each backend's host name.
    pub sni: Option<String>,
    /// Verify the backend's certificate chain and name (default on).
    pub verify: bool,
    /// Trust anchors from `ca_file`, DER; empty = the system's.
    pub ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub protocol: UpstreamProtocol,
    /// gRPC status codes that count as a failed request (bit `n` = code
    /// `n`), read from a response's `grpc-status` header or trailer.
    pub grpc_errors: GrpcCodes,
}

/// A set of gRPC status codes (0–16) as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodes(pub u32);

impl GrpcCodes {
    /// The codes, by number, as the gRPC spec names them.
    pub const NAMES: [&'static str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];

    /// The server's faults, not the caller's: UNKNOWN, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
    pub const DEFAULT: GrpcCodes =
        GrpcCodes((1 << 2) | (1 << 4) | (1 << 8) | (1 << 13) | (1 << 14) | (1 << 15));

    /// Is the `grpc-status` value `text` one of these codes?
    #[inline]
    pub fn contains_status(self, text: &[u8]) -> bool {
        let code = match text {
            [d] if d.is_ascii_digit() => u32::from(d - b'0'),
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                u32::from(a - b'0') * 10 + u32::from(b - b'0')
            }
            _ => return false,
        };
        code < 32 && self.0 & (1 << code) != 0
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            tls: false,
            sni: None,
            verify: true,
            ca: Vec::new(),
            protocol: UpstreamProtocol::Http1,
            grpc_errors: GrpcCodes::DEFAULT,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// What the operator wrote (`"app-1.internal:9001"`), for status and metrics labels.
    pub name: String,
    /// Resolved once at load time; the request path never resolves names.
    pub addr: SocketAddr,
    /// Relative weight inside the pool, >= 1.
    pub weight: u32,
}

/// How an issued sticky cookie is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueCookie {
    pub name: String,
    /// `Max-Age` (`[sticky] cookie_max_age`, default 24 h).
    pub max_age: std::time::Duration,
}

/// `{ dns = "NAME:PORT", weight = N, allow_empty = B }`: every A/AAAA
/// address NAME resolves to, each with this weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsBackend {
    /// As written (`"green.internal:8080"`): names the entry in status,
    /// metrics and logs.
    pub name: String,
    /// The DNS name, lower-case, without a trailing dot.
    pub host: String,
    pub port: u16,
    /// Weight of each of its addresses, >= 1.
    pub weight: u32,
    /// An answer with no address empties the set instead of counting as a
    /// failed lookup; `None` = `[discovery] allow_empty`.
    pub allow_empty: Option<bool>,
}

/// `[discovery]`: how `dns` backends are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// `ip:port` of the DNS servers to ask; empty = the system's
    /// `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Each name is re-resolved at least this often.
    pub refresh: Duration,
    /// A record's TTL shorter than `refresh` brings the next lookup
    /// forward, but never below this.
    pub min_ttl: Duration,
    /// One lookup (all its attempts) gives up after this long.
    pub timeout: Duration,
    /// The default of each backend's `allow_empty`.
    pub allow_empty: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            nameservers: Vec::new(),
            refresh: Duration::from_secs(5),
            min_ttl: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            allow_empty: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// `cookie:NAME`
    Cookie(String),
    /// `header:NAME`
    Header(http::HeaderName),
    /// `ip`: the client's address
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// A line of header `name` equals `value` exactly.
    Header {
        name: http::HeaderName,
        value: http::HeaderValue,
    },
    /// Cookie `name` equals value exactly.
    Cookie { name: String, value: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub matcher: RouteMatch,
    pub pool: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Active checks on (default). Off: every backend counts as up unless
    /// passively ejected.
    pub enabled: bool,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Passive ejection: consecutive failures (upstream errors or 5xx) that eject a backend.
    pub eject_consecutive_failures: u32,
    /// First ejection lasts this long; it doubles on repeated ejection.
    pub eject_base_time: Duration,
    /// Upper bound of an ejection.
    pub eject_max_time: Duration,
    /// Never eject passively more than this percent of a pool's backends.
    pub eject_max_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    pub enabled: bool,
    pub window: Duration,
    pub min_requests: u64,
    /// Percent, 0..=100.
    pub max_error_rate: Option<f64>,
    pub max_p95: Option<Duration>,
    pub max_p99: Option<Duration>,
    pub max_error_rate_vs_baseline: Option<f64>,
    pub max_p95_vs_baseline: Option<f64>,
    /// The chance the guard may take of ever rolling back a healthy pool
    /// in one watch (the sequential tests' false-trip budget).
    pub alpha: f64,
    pub mode: GuardMode,
    pub watch: Duration,
    pub rollback_target_ttl: Duration,
}

/// What a trip does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// Roll back at once.
    Rollback,
    /// Record what it would have done (audit, webhook, metric), change nothing.
    Observe,
}

impl GuardMode {
    pub fn label(self) -> &'static str {
        match self {
            GuardMode::Rollback => "rollback",
            GuardMode::Observe => "observe",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryConfig {
    pub steps: Vec<CanaryStep>,
    /// A step that has not gathered its evidence this long after it began
    /// pauses the canary (`canary_stalled`).
    pub max_step_wait: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStep {
    pub weight: Share,
    /// `None` on the last step (nothing to hold for).
    pub hold: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// `http://` or `https://` URLs.
    pub webhooks: Vec<String>,
    /// Per-attempt timeout of a webhook POST.
    pub timeout: Duration,
    /// Give up retrying one event after this long.
    pub retry_for: Duration,
    /// Trust anchors for `https://` webhooks from `ca_file`, DER; empty =
    /// the system's.
    pub ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Sent with every POST (an authorization token, say). The values are
    /// marked sensitive: their `Debug` prints `Sensitive`, never the value.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub format: NotifyFormat,
}

/// The body of a webhook POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyFormat {
    /// The event itself (SPEC §8).
    #[default]
    Json,
    /// Slack's incoming-webhook body, `{"text": "…"}`: the event's one line.
    Slack,
}
