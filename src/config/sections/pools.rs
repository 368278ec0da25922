//! `[pools.*]`: each pool's backends (host names resolved now, once, so
//! the request path never waits on DNS; `{ dns = … }` names are followed
//! at runtime by `crate::discovery`, see `super::discovery`) and how the
//! proxy talks to them (`tls`, `sni`, `verify`, `ca_file`, `protocol`,
//! `grpc_error_codes`).

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use toml::Value;

use super::discovery::read_dns_backend;
use super::{resolve_path, tls};
use crate::config::types::{
    BackendConfig, DnsBackend, GrpcCodes, PoolConfig, UpstreamConfig, UpstreamProtocol,
};
use crate::config::walk::{expected, join, Errors, Section};

fn valid_pool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn read_pools(
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
        let pool = Section::read(errors, path, pool_table, |p, errors| {
            read_pool(errors, p, base_dir)
        });
        pools.insert(name.clone(), pool);
    }
    pools
}

fn read_pool(errors: &mut Errors, p: &Section, base_dir: &Path) -> PoolConfig {
    if !p.has("backends") {
        errors.add(
            p.key("backends"),
            "missing (use [] for a pool being prepared)",
        );
    }
    let (backends, dns) = read_backends(errors, p);
    let upstream = read_upstream(errors, p, base_dir);
    let pool = PoolConfig {
        backends,
        dns,
        upstream,
    };
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
    pool
}

/// `tls`, `sni`, `verify`, `ca_file`, `protocol` and `grpc_error_codes` of
/// one pool.
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
        Some(text) => match tls::load_ca_bundle(&resolve_path(base_dir, text)) {
            Ok(certs) => certs,
            Err(e) => {
                errors.add(pool.key("ca_file"), e.to_string());
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
        grpc_errors: read_grpc_codes(errors, pool),
    }
}

/// `grpc_error_codes`: gRPC status codes by number or name
/// (`[14, "INTERNAL"]`); an empty list counts no gRPC status as an error.
fn read_grpc_codes(errors: &mut Errors, pool: &Section) -> GrpcCodes {
    let Some(items) = pool.array(errors, "grpc_error_codes") else {
        return GrpcCodes::DEFAULT;
    };
    let mut codes = 0u32;
    for (i, item) in items.iter().enumerate() {
        let code = match item {
            Value::Integer(n) => usize::try_from(*n).ok().filter(|n| *n <= 16),
            Value::String(name) => GrpcCodes::NAMES
                .iter()
                .position(|known| known.eq_ignore_ascii_case(name)),
            _ => None,
        };
        match code {
            Some(0) => errors.add(
                format!("{}[{i}]", pool.key("grpc_error_codes")),
                "0 (OK) is a success, not an error",
            ),
            Some(code) => codes |= 1 << code,
            None => errors.add(
                format!("{}[{i}]", pool.key("grpc_error_codes")),
                format!(
                    "{item}: expected a gRPC status code, 1-16 or its name (e.g. \"UNAVAILABLE\")"
                ),
            ),
        }
    }
    GrpcCodes(codes)
}

/// The pool's `backends`: fixed addresses (`"host:port"`, `{ addr = … }`)
/// and DNS names (`{ dns = "NAME:PORT" }`), each with its weight.
fn read_backends(errors: &mut Errors, pool: &Section) -> (Vec<BackendConfig>, Vec<DnsBackend>) {
    let mut backends: Vec<BackendConfig> = Vec::new();
    let mut dns: Vec<DnsBackend> = Vec::new();
    // The addresses so far: a set, so that a pool of 100 000 backends is
    // checked in linear time (a scan of the list made `check` quadratic).
    let mut seen: HashSet<SocketAddr> = HashSet::new();
    for (i, item) in pool
        .array(errors, "backends")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("{}[{i}]", pool.key("backends"));
        let (text, weight) = match item {
            Value::String(text) => (text.as_str(), 1),
            Value::Table(table) if table.contains_key("dns") => {
                let entry = Section::read(errors, path.clone(), table, |b, errors| {
                    if b.raw("addr").is_some() {
                        errors.add(
                            &path,
                            "give either addr (one address) or dns (every address of a name), not both",
                        );
                    }
                    let text = b.str(errors, "dns")?;
                    read_dns_backend(errors, b, text)
                });
                let Some(entry) = entry else { continue };
                if dns
                    .iter()
                    .any(|d| d.host == entry.host && d.port == entry.port)
                {
                    errors.add(
                        &path,
                        format!(
                            "{{ dns = \"{}\" }} is listed twice in this pool",
                            entry.name
                        ),
                    );
                    continue;
                }
                dns.push(entry);
                continue;
            }
            Value::Table(table) => {
                let entry = Section::read(errors, path.clone(), table, |b, errors| {
                    let weight = b.int(errors, "weight", 1..=1000).unwrap_or(1) as u32;
                    match b.str(errors, "addr") {
                        Some(text) => Some((text, weight)),
                        None => {
                            if !b.has("addr") {
                                errors.add(b.key("addr"), "missing (or dns = \"NAME:PORT\")");
                            }
                            None
                        }
                    }
                });
                let Some(entry) = entry else { continue };
                entry
            }
            other => {
                expected(
                    errors,
                    &path,
                    "\"host:port\", { addr = \"host:port\", weight = N } or { dns = \"NAME:PORT\" }",
                    other,
                );
                continue;
            }
        };
        let Some(addr) = resolve_backend(errors, &path, text) else {
            continue;
        };
        if !seen.insert(addr) {
            errors.add(&path, format!("\"{text}\" is listed twice in this pool"));
            continue;
        }
        backends.push(BackendConfig {
            name: text.to_string(),
            addr,
            weight,
        });
    }
    (backends, dns)
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
