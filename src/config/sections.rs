//! One reader per config section: defaults, value rules and cross-section
//! checks. Each reader records its errors and returns a value anyway (its
//! default) so that later sections are still checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::parse_share;
use super::types::*;
use super::walk::{expected, join, number, Errors, Section};
use super::ConfigErrors;

const ROOT_KEYS: &[&str] = &[
    "server", "admin", "pools", "split", "sticky", "route", "health", "guard", "canary", "notify",
];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "h2c",
    "fast_path",
    "threads",
    "pool_header",
    "tls",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "grace_period",
    "upstream_keepalive_pool",
];
const TLS_KEYS: &[&str] = &["listen", "cert", "key", "server_names"];
const ADMIN_KEYS: &[&str] = &["socket", "http", "state_dir"];
const POOL_KEYS: &[&str] = &["backends", "tls", "sni", "verify", "ca_file", "protocol"];
const BACKEND_KEYS: &[&str] = &["addr", "weight"];
const STICKY_KEYS: &[&str] = &["key"];
const ROUTE_KEYS: &[&str] = &["header", "cookie", "equals", "pool"];
const HEALTH_KEYS: &[&str] = &[
    "enabled",
    "path",
    "interval",
    "timeout",
    "rise",
    "fall",
    "eject_consecutive_failures",
    "eject_base_time",
    "eject_max_time",
    "eject_max_percent",
];
const GUARD_KEYS: &[&str] = &[
    "enabled",
    "window",
    "min_requests",
    "max_error_rate",
    "max_p95",
    "max_p99",
    "max_error_rate_vs_baseline",
    "max_p95_vs_baseline",
    "watch",
    "rollback_target_ttl",
];
const CANARY_KEYS: &[&str] = &["steps"];
const STEP_KEYS: &[&str] = &["weight", "hold"];
const NOTIFY_KEYS: &[&str] = &["webhooks", "timeout", "retry_for"];

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(super) fn read(document: &toml::Table, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::default();
    let root = Section::new("", document, ROOT_KEYS);
    root.finish(&mut errors);

    let server = read_server(&mut errors, &root, base_dir);
    let admin = read_admin(&mut errors, &root, base_dir);
    let pools = read_pools(&mut errors, &root, base_dir);
    let split = read_split(&mut errors, &root, &pools);
    let sticky = read_sticky(&mut errors, &root);
    let routes = read_routes(&mut errors, &root, &pools);
    let health = read_health(&mut errors, &root);
    let guard = read_guard(&mut errors, &root);
    let canary = read_canary(&mut errors, &root);
    let notify = read_notify(&mut errors, &root);

    if errors.0.is_empty() {
        Ok(Config {
            server,
            admin,
            pools,
            split,
            sticky,
            routes,
            health,
            guard,
            canary,
            notify,
        })
    } else {
        Err(ConfigErrors(errors.0))
    }
}

fn parse_listen(errors: &mut Errors, path: &str, text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.add(
                path,
                format!("invalid listen address \"{text}\" (expected ip:port)"),
            );
            None
        }
    }
}

fn resolve_path(base_dir: &Path, text: &str) -> PathBuf {
    let path = Path::new(text);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn valid_header_name(name: &str) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

fn read_server(errors: &mut Errors, root: &Section, base_dir: &Path) -> ServerConfig {
    let s = root.section(errors, "server", SERVER_KEYS);
    s.finish(errors);

    let mut listen = Vec::new();
    match s.raw("listen") {
        None => listen.push(SocketAddr::from(([127, 0, 0, 1], 8080))),
        Some(_) => {
            for (i, item) in s.array(errors, "listen").into_iter().flatten().enumerate() {
                let path = format!("{}[{i}]", s.key("listen"));
                match item.as_str() {
                    Some(text) => listen.extend(parse_listen(errors, &path, text)),
                    None => expected(errors, &path, "a string \"ip:port\"", item),
                }
            }
        }
    }

    let threads_default = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = s
        .int(errors, "threads", 1..=256)
        .map_or(threads_default, |n| n as usize);

    let pool_header = s.str(errors, "pool_header").and_then(|h| {
        if valid_header_name(h) {
            Some(h.to_ascii_lowercase())
        } else {
            errors.add(
                s.key("pool_header"),
                format!("\"{h}\" is not a valid header name"),
            );
            None
        }
    });

    let tls = read_tls(errors, &s, base_dir);
    let listen_empty = s
        .raw("listen")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    if listen_empty && tls.is_empty() {
        errors.add(
            s.key("listen"),
            "no listener: give at least one address or a [[server.tls]] listener",
        );
    }
    let mut seen = BTreeSet::new();
    for addr in &listen {
        if !seen.insert(*addr) {
            errors.add(s.key("listen"), format!("{addr} is listed twice"));
        }
    }
    check_tls_sharing(errors, &s.key("tls"), &tls, &seen);

    ServerConfig {
        listen,
        h2c: s.boolean(errors, "h2c").unwrap_or(false),
        fast_path: s.boolean(errors, "fast_path").unwrap_or(true),
        threads,
        pool_header,
        tls,
        connect_timeout: s.positive_duration(errors, "connect_timeout", secs(3)),
        read_timeout: s.positive_duration(errors, "read_timeout", secs(60)),
        write_timeout: s.positive_duration(errors, "write_timeout", secs(60)),
        idle_timeout: s.positive_duration(errors, "idle_timeout", secs(60)),
        grace_period: s.positive_duration(errors, "grace_period", secs(30)),
        upstream_keepalive_pool: s
            .int(errors, "upstream_keepalive_pool", 1..=1_000_000)
            .map_or(1024, |n| n as usize),
    }
}

/// Several `[[server.tls]]` entries may share one address, told apart by
/// SNI: each server name once per address, at most one entry without names
/// (the default certificate). A plain listener can't share a TLS address.
fn check_tls_sharing(
    errors: &mut Errors,
    path: &str,
    tls: &[TlsListener],
    plain: &BTreeSet<SocketAddr>,
) {
    for (i, entry) in tls.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if plain.contains(&entry.listen) {
            errors.add(
                format!("{here}.listen"),
                format!("{} is also a plain listener", entry.listen),
            );
        }
        let earlier = tls[..i].iter().filter(|e| e.listen == entry.listen);
        for other in earlier {
            if entry.server_names.is_empty() && other.server_names.is_empty() {
                errors.add(
                    format!("{here}.server_names"),
                    format!(
                        "{} already has a default certificate: give this entry server_names",
                        entry.listen
                    ),
                );
            }
            for name in &entry.server_names {
                if other.server_names.contains(name) {
                    errors.add(
                        format!("{here}.server_names"),
                        format!("\"{name}\" is already served on {}", entry.listen),
                    );
                }
            }
        }
    }
}

fn read_tls(errors: &mut Errors, server: &Section, base_dir: &Path) -> Vec<TlsListener> {
    let mut listeners = Vec::new();
    for (i, item) in server
        .array(errors, "tls")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{}[{i}]", server.key("tls"));
        let Some(table) = item.as_table() else {
            expected(errors, &path, "a table", item);
            continue;
        };
        let t = Section::new(path.clone(), table, TLS_KEYS);
        t.finish(errors);
        let listen = match t.str(errors, "listen") {
            Some(text) => parse_listen(errors, &t.key("listen"), text),
            None => {
                if !t.has("listen") {
                    errors.add(t.key("listen"), "missing");
                }
                None
            }
        };
        let mut file = |key: &str| -> Option<PathBuf> {
            let Some(text) = t.str(errors, key) else {
                if !t.has(key) {
                    errors.add(t.key(key), "missing");
                }
                return None;
            };
            let path = resolve_path(base_dir, text);
            match std::fs::File::open(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    errors.add(
                        t.key(key),
                        format!("cannot read \"{}\": {e}", path.display()),
                    );
                    None
                }
            }
        };
        let cert = file("cert");
        let key = file("key");
        let mut server_names = Vec::new();
        for (j, name) in t
            .array(errors, "server_names")
            .into_iter()
            .flatten()
            .enumerate()
        {
            match name.as_str() {
                Some(n) if !n.is_empty() => server_names.push(n.to_ascii_lowercase()),
                _ => expected(
                    errors,
                    &format!("{}[{j}]", t.key("server_names")),
                    "a non-empty string",
                    name,
                ),
            }
        }
        if let (Some(listen), Some(cert), Some(key)) = (listen, cert, key) {
            // Load them now as the server would: a bad pair is a config
            // error with its key path, never a panic at start.
            if let Err(e) = crate::tls::material::load_certified_key(&cert, &key) {
                errors.add(t.key("cert"), e);
                continue;
            }
            listeners.push(TlsListener {
                listen,
                cert,
                key,
                server_names,
            });
        }
    }
    listeners
}

fn read_admin(errors: &mut Errors, root: &Section, base_dir: &Path) -> AdminConfig {
    let a = root.section(errors, "admin", ADMIN_KEYS);
    a.finish(errors);
    let socket = a
        .str(errors, "socket")
        .unwrap_or("/run/switchyard/admin.sock");
    let state_dir = a.str(errors, "state_dir").unwrap_or("/var/lib/switchyard");
    let http = match a.str(errors, "http") {
        Some("") => None,
        Some(text) => parse_listen(errors, &a.key("http"), text),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    if socket.is_empty() {
        errors.add(a.key("socket"), "must not be empty");
    }
    if state_dir.is_empty() {
        errors.add(a.key("state_dir"), "must not be empty");
    }
    AdminConfig {
        socket: resolve_path(base_dir, socket),
        http,
        state_dir: resolve_path(base_dir, state_dir),
    }
}

fn valid_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_pools(
    errors: &mut Errors,
    root: &Section,
    base_dir: &Path,
) -> BTreeMap<String, PoolConfig> {
    let mut pools = BTreeMap::new();
    let table = match root.raw("pools") {
        Some(Value::Table(t)) => t,
        Some(other) => {
            expected(errors, "pools", "a table of pools", other);
            return pools;
        }
        None => {
            errors.add("pools", "missing: define at least one pool, e.g. [pools.blue] backends = [\"127.0.0.1:9001\"]");
            return pools;
        }
    };
    if table.is_empty() {
        errors.add("pools", "no pools defined");
    }
    for (name, value) in table {
        let path = join("pools", name);
        if !valid_pool_name(name) {
            errors.add(
                &path,
                "pool names use only letters, digits, '-' and '_' (at most 64)",
            );
        }
        let Some(pool_table) = value.as_table() else {
            expected(errors, &path, "a table", value);
            continue;
        };
        let p = Section::new(path, pool_table, POOL_KEYS);
        p.finish(errors);
        if !p.has("backends") {
            errors.add(
                p.key("backends"),
                "missing (use [] for a pool being prepared)",
            );
        }
        let backends = read_backends(errors, &p);
        let upstream = read_upstream(errors, &p, base_dir);
        let pool = PoolConfig { backends, upstream };
        if pool.upstream.tls && pool.upstream.verify {
            for backend in &pool.backends {
                if pool.server_name(backend).is_empty() {
                    errors.add(
                        p.key("sni"),
                        format!(
                            "needed to verify backend \"{}\" (an IP address): give the name its certificate carries, or set verify = false",
                            backend.name
                        ),
                    );
                    break;
                }
            }
        }
        pools.insert(name.clone(), pool);
    }
    pools
}

/// `tls`, `sni`, `verify`, `ca_file` and `protocol` of one pool.
fn read_upstream(errors: &mut Errors, pool: &Section, base_dir: &Path) -> UpstreamConfig {
    let defaults = UpstreamConfig::default();
    let tls = pool.boolean(errors, "tls").unwrap_or(defaults.tls);
    if !tls {
        for key in ["sni", "verify", "ca_file"] {
            if pool.has(key) {
                errors.add(pool.key(key), "applies only with tls = true");
            }
        }
    }
    let sni = pool.str(errors, "sni").and_then(|name| {
        let valid = !name.is_empty()
            && name.parse::<std::net::IpAddr>().is_err()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if valid {
            Some(name.to_ascii_lowercase())
        } else {
            errors.add(pool.key("sni"), format!("\"{name}\" is not a DNS name"));
            None
        }
    });
    let ca = match pool.str(errors, "ca_file") {
        Some(text) => match crate::tls::material::load_ca_bundle(&resolve_path(base_dir, text)) {
            Ok(certs) => certs,
            Err(e) => {
                errors.add(pool.key("ca_file"), e);
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let protocol = match pool.str(errors, "protocol") {
        None | Some("h1") | Some("http1") => UpstreamProtocol::Http1,
        Some("h2") | Some("http2") => UpstreamProtocol::Http2,
        Some("auto") if tls => UpstreamProtocol::Auto,
        Some("auto") => {
            errors.add(
                pool.key("protocol"),
                "\"auto\" chooses by ALPN and needs tls = true; use \"h2\" for cleartext HTTP/2 (h2c)",
            );
            UpstreamProtocol::Http1
        }
        Some(other) => {
            errors.add(
                pool.key("protocol"),
                format!("\"{other}\": expected \"h1\", \"h2\" or \"auto\""),
            );
            UpstreamProtocol::Http1
        }
    };
    UpstreamConfig {
        tls,
        sni,
        verify: pool.boolean(errors, "verify").unwrap_or(defaults.verify),
        ca,
        protocol,
    }
}

fn read_backends(errors: &mut Errors, pool: &Section) -> Vec<BackendConfig> {
    let mut backends: Vec<BackendConfig> = Vec::new();
    for (i, item) in pool
        .array(errors, "backends")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{}[{i}]", pool.key("backends"));
        let (text, weight) = match item {
            Value::String(text) => (text.as_str(), 1),
            Value::Table(table) => {
                let b = Section::new(path.clone(), table, BACKEND_KEYS);
                b.finish(errors);
                let weight = b.int(errors, "weight", 1..=1000).unwrap_or(1) as u32;
                match b.str(errors, "addr") {
                    Some(text) => (text, weight),
                    None => {
                        if !b.has("addr") {
                            errors.add(b.key("addr"), "missing");
                        }
                        continue;
                    }
                }
            }
            other => {
                expected(
                    errors,
                    &path,
                    "\"host:port\" or { addr = \"host:port\", weight = N }",
                    other,
                );
                continue;
            }
        };
        let Some(addr) = resolve_backend(errors, &path, text) else {
            continue;
        };
        if backends.iter().any(|b| b.addr == addr) {
            errors.add(&path, format!("\"{text}\" is listed twice in this pool"));
            continue;
        }
        backends.push(BackendConfig {
            name: text.to_string(),
            addr,
            weight,
        });
    }
    backends
}

/// `ip:port` parses directly; `host:port` is resolved now, once, so the
/// request path never waits on DNS. IPv4 results are preferred.
fn resolve_backend(errors: &mut Errors, path: &str, text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let invalid = |errors: &mut Errors| errors.add(path, format!("invalid address \"{text}\""));
    let Some((host, port)) = text.rsplit_once(':') else {
        invalid(errors);
        return None;
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !host_ok || port.parse::<u16>().is_err() {
        invalid(errors);
        return None;
    }
    match text.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            let chosen = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied();
            if chosen.is_none() {
                errors.add(path, format!("cannot resolve \"{text}\": no addresses"));
            }
            chosen
        }
        Err(e) => {
            errors.add(path, format!("cannot resolve \"{text}\": {e}"));
            None
        }
    }
}

fn read_split(errors: &mut Errors, root: &Section, pools: &BTreeMap<String, PoolConfig>) -> Split {
    let mut split: Split = pools
        .keys()
        .map(|name| (name.clone(), Share::ZERO))
        .collect();
    let table = match root.raw("split") {
        Some(Value::Table(t)) => t,
        Some(other) => {
            expected(errors, "split", "a table of pool = percent", other);
            return split;
        }
        None => {
            if pools.len() == 1 {
                for share in split.values_mut() {
                    *share = Share::FULL;
                }
            } else if pools.len() > 1 {
                errors.add(
                    "split",
                    "missing; give each pool a share (they must sum to 100)",
                );
            }
            return split;
        }
    };
    let mut sum: u32 = 0;
    let mut all_valid = true;
    for (name, value) in table {
        let path = join("split", name);
        let share = match number(value) {
            Some(percent) => match parse_share(percent) {
                Ok(share) => share,
                Err(message) => {
                    errors.add(&path, message);
                    all_valid = false;
                    continue;
                }
            },
            None => {
                expected(errors, &path, "a percentage", value);
                all_valid = false;
                continue;
            }
        };
        let Some(pool) = pools.get(name) else {
            errors.add(&path, "no such pool");
            all_valid = false;
            continue;
        };
        if share > Share::ZERO && pool.backends.is_empty() {
            errors.add(
                &path,
                format!("pool has a share of {share} but no backends"),
            );
        }
        sum += u32::from(share.units());
        split.insert(name.clone(), share);
    }
    if all_valid && sum != u32::from(Share::FULL.units()) {
        errors.add(
            "split",
            format!(
                "shares sum to {}, must be 100",
                Share(sum.min(u32::from(u16::MAX)) as u16)
            ),
        );
    }
    split
}

fn read_sticky(errors: &mut Errors, root: &Section) -> Option<StickyKey> {
    if !root.has("sticky") {
        return None;
    }
    let s = root.section(errors, "sticky", STICKY_KEYS);
    s.finish(errors);
    let text = match s.str(errors, "key") {
        Some(text) => text,
        None => {
            if !s.has("key") {
                errors.add(
                    s.key("key"),
                    "missing (\"cookie:NAME\", \"header:NAME\" or \"ip\")",
                );
            }
            return None;
        }
    };
    let key = match text.split_once(':') {
        Some(("cookie", name)) if !name.is_empty() => Some(StickyKey::Cookie(name.to_string())),
        Some(("header", name)) if valid_header_name(name) => {
            Some(StickyKey::Header(name.to_ascii_lowercase()))
        }
        None if text == "ip" => Some(StickyKey::ClientIp),
        _ => None,
    };
    if key.is_none() {
        errors.add(
            s.key("key"),
            format!("invalid sticky key \"{text}\" (expected \"cookie:NAME\", \"header:NAME\" or \"ip\")"),
        );
    }
    key
}

fn read_routes(
    errors: &mut Errors,
    root: &Section,
    pools: &BTreeMap<String, PoolConfig>,
) -> Vec<RouteRule> {
    let mut routes = Vec::new();
    for (i, item) in root
        .array(errors, "route")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("route[{i}]");
        let Some(table) = item.as_table() else {
            expected(errors, &path, "a table", item);
            continue;
        };
        let r = Section::new(path, table, ROUTE_KEYS);
        r.finish(errors);
        let header = r.str(errors, "header");
        let cookie = r.str(errors, "cookie");
        let equals = r.str(errors, "equals");
        let pool = r.str(errors, "pool");
        if !r.has("equals") {
            errors.add(r.key("equals"), "missing");
        }
        match pool {
            Some(name) if !pools.contains_key(name) => {
                errors.add(r.key("pool"), format!("no such pool \"{name}\""))
            }
            None if !r.has("pool") => errors.add(r.key("pool"), "missing"),
            _ => {}
        }
        let matcher = match (header, cookie) {
            (Some(_), Some(_)) => {
                errors.add(&r.path, "give either header or cookie, not both");
                None
            }
            (Some(name), None) if !valid_header_name(name) => {
                errors.add(
                    r.key("header"),
                    format!("\"{name}\" is not a valid header name"),
                );
                None
            }
            (Some(name), None) => equals.map(|value| RouteMatch::Header {
                name: name.to_ascii_lowercase(),
                value: value.to_string(),
            }),
            (None, Some("")) => {
                errors.add(r.key("cookie"), "must not be empty");
                None
            }
            (None, Some(name)) => equals.map(|value| RouteMatch::Cookie {
                name: name.to_string(),
                value: value.to_string(),
            }),
            (None, None) => {
                if !r.has("header") && !r.has("cookie") {
                    errors.add(&r.path, "missing header or cookie to match on");
                }
                None
            }
        };
        if let (Some(matcher), Some(pool)) = (matcher, pool) {
            routes.push(RouteRule {
                matcher,
                pool: pool.to_string(),
            });
        }
    }
    routes
}

fn read_health(errors: &mut Errors, root: &Section) -> HealthConfig {
    let h = root.section(errors, "health", HEALTH_KEYS);
    h.finish(errors);
    let path = match h.str(errors, "path") {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => {
            errors.add(h.key("path"), format!("\"{p}\" must start with '/'"));
            "/health".to_string()
        }
        None => "/health".to_string(),
    };
    let interval = h.positive_duration(errors, "interval", secs(2));
    let timeout = h.positive_duration(errors, "timeout", secs(1));
    if timeout > interval {
        errors.add(h.key("timeout"), "must not be longer than health.interval");
    }
    let eject_base_time = h.positive_duration(errors, "eject_base_time", secs(30));
    let eject_max_time = h.positive_duration(errors, "eject_max_time", secs(300));
    if eject_max_time < eject_base_time {
        errors.add(
            h.key("eject_max_time"),
            "must not be shorter than health.eject_base_time",
        );
    }
    HealthConfig {
        enabled: h.boolean(errors, "enabled").unwrap_or(true),
        path,
        interval,
        timeout,
        rise: h.int(errors, "rise", 1..=100).unwrap_or(2) as u32,
        fall: h.int(errors, "fall", 1..=100).unwrap_or(3) as u32,
        eject_consecutive_failures: h
            .int(errors, "eject_consecutive_failures", 0..=10_000)
            .unwrap_or(5) as u32,
        eject_base_time,
        eject_max_time,
        eject_max_percent: h.int(errors, "eject_max_percent", 0..=100).unwrap_or(50) as u32,
    }
}

fn read_guard(errors: &mut Errors, root: &Section) -> GuardConfig {
    let g = root.section(errors, "guard", GUARD_KEYS);
    g.finish(errors);
    let window = g.positive_duration(errors, "window", secs(30));
    if !(secs(1)..=secs(3600)).contains(&window) {
        errors.add(g.key("window"), "must be between 1s and 1h");
    }
    let percent = |errors: &mut Errors, key: &str| -> Option<f64> {
        let value = g.number(errors, key)?;
        if value > 0.0 && value <= 100.0 {
            Some(value)
        } else {
            errors.add(
                g.key(key),
                format!("{value} is not a percentage above 0 and at most 100"),
            );
            None
        }
    };
    let max_error_rate = if g.has("max_error_rate") {
        percent(errors, "max_error_rate")
    } else {
        Some(5.0)
    };
    let ratio = |errors: &mut Errors, key: &str| -> Option<f64> {
        let value = g.number(errors, key)?;
        if value > 1.0 && value.is_finite() {
            Some(value)
        } else {
            errors.add(g.key(key), format!("{value} must be a ratio above 1.0"));
            None
        }
    };
    let max_error_rate_vs_baseline = ratio(errors, "max_error_rate_vs_baseline");
    let max_p95_vs_baseline = ratio(errors, "max_p95_vs_baseline");
    let mut optional_duration = |key: &str| {
        let d = g.duration(errors, key);
        if d.is_some_and(|d| d.is_zero()) {
            errors.add(g.key(key), "must be greater than 0");
        }
        d
    };
    let max_p95 = optional_duration("max_p95");
    let max_p99 = optional_duration("max_p99");
    GuardConfig {
        enabled: g.boolean(errors, "enabled").unwrap_or(true),
        window,
        min_requests: g.int(errors, "min_requests", 1..=10_000_000).unwrap_or(50) as u64,
        max_error_rate,
        max_p95,
        max_p99,
        max_error_rate_vs_baseline,
        max_p95_vs_baseline,
        watch: g.positive_duration(errors, "watch", secs(600)),
        rollback_target_ttl: g.positive_duration(errors, "rollback_target_ttl", secs(86_400)),
    }
}

fn default_canary_steps() -> Vec<CanaryStep> {
    let step = |weight: u16, hold: Option<u64>| CanaryStep {
        weight: Share(weight * 100),
        hold: hold.map(secs),
    };
    vec![
        step(5, Some(300)),
        step(25, Some(600)),
        step(50, Some(900)),
        step(100, None),
    ]
}

fn read_canary(errors: &mut Errors, root: &Section) -> CanaryConfig {
    let c = root.section(errors, "canary", CANARY_KEYS);
    c.finish(errors);
    let Some(items) = c.array(errors, "steps") else {
        return CanaryConfig {
            steps: default_canary_steps(),
        };
    };
    let mut steps = Vec::new();
    let last_index = items.len().saturating_sub(1);
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", c.key("steps"));
        let Some(table) = item.as_table() else {
            expected(errors, &path, "a table { weight = N, hold = \"5m\" }", item);
            continue;
        };
        let s = Section::new(path, table, STEP_KEYS);
        s.finish(errors);
        let weight = match s.number(errors, "weight") {
            Some(w) => match parse_share(w) {
                Ok(share) if share > Share::ZERO => Some(share),
                Ok(_) => {
                    errors.add(s.key("weight"), "must be above 0");
                    None
                }
                Err(message) => {
                    errors.add(s.key("weight"), message);
                    None
                }
            },
            None => {
                if !s.has("weight") {
                    errors.add(s.key("weight"), "missing");
                }
                None
            }
        };
        let hold = s.duration(errors, "hold");
        if hold.is_none() && !s.has("hold") && i != last_index {
            errors.add(
                s.key("hold"),
                "missing (every step but the last holds for a while)",
            );
        }
        if let Some(weight) = weight {
            if let Some(previous) = steps.last().map(|p: &CanaryStep| p.weight) {
                if weight <= previous {
                    errors.add(
                        s.key("weight"),
                        format!("{weight} must be above the previous step's {previous}"),
                    );
                }
            }
            steps.push(CanaryStep { weight, hold });
        }
    }
    if items.is_empty() {
        errors.add(c.key("steps"), "at least one step is needed");
    } else if steps.last().is_some_and(|s| s.weight != Share::FULL) {
        errors.add(c.key("steps"), "the last step must be weight = 100");
    }
    CanaryConfig { steps }
}

fn read_notify(errors: &mut Errors, root: &Section) -> NotifyConfig {
    let n = root.section(errors, "notify", NOTIFY_KEYS);
    n.finish(errors);
    let mut webhooks = Vec::new();
    for (i, item) in n
        .array(errors, "webhooks")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{}[{i}]", n.key("webhooks"));
        match item.as_str() {
            Some(url) if valid_http_url(url) => webhooks.push(url.to_string()),
            Some(url) if url.starts_with("http://") => errors.add(
                &path,
                format!("invalid URL \"{url}\" (expected http://host:port/path)"),
            ),
            Some(_) => errors.add(&path, "only http:// URLs are supported"),
            None => expected(errors, &path, "a URL string", item),
        }
    }
    NotifyConfig {
        webhooks,
        timeout: n.positive_duration(errors, "timeout", secs(5)),
        retry_for: n.positive_duration(errors, "retry_for", secs(60)),
    }
}

fn valid_http_url(url: &str) -> bool {
    url.starts_with("http://")
        && url
            .parse::<http::Uri>()
            .is_ok_and(|uri| uri.host().is_some_and(|h| !h.is_empty()))
}
