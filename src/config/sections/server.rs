//! `[server]` (listeners, upstream timeouts), `[[server.tls]]` (termination
//! certificates, loaded and checked now so a bad pair is a config error,
//! never a panic at start) and `[admin]`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::{header_name, parse_listen, resolve_path, secs, tls};
use crate::config::types::{AdminConfig, ServerConfig, TlsListener};
use crate::config::walk::{expected, Errors, Section};

pub(super) fn read_server(errors: &mut Errors, root: &Section, base_dir: &Path) -> ServerConfig {
    root.section(errors, "server", |s, errors| {
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

        let pool_header = s
            .str(errors, "pool_header")
            .and_then(|h| header_name(errors, &s.key("pool_header"), h));

        let tls = read_tls(errors, s, base_dir);
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
            max_request_head: s
                .size(errors, "max_request_head", MIN_HEAD..=MAX_HEAD)
                .map_or(32 * 1024, |n| n as usize),
            request_head_timeout: head_timeout(errors, s),
            grace_period: s.positive_duration(errors, "grace_period", secs(30)),
            upstream_keepalive_pool: s
                .int(errors, "upstream_keepalive_pool", 1..=1_000_000)
                .map_or(1024, |n| n as usize),
        }
    })
}

/// Bounds of `server.max_request_head`: below 1 KiB, ordinary browser
/// requests (cookies, user agent) would be refused; pingora's HTTP/1 parser
/// refuses heads from 1 MiB on, so 512 KiB leaves it never the one to decide.
const MIN_HEAD: u64 = 1024;
const MAX_HEAD: u64 = 512 * 1024;
/// `server.request_head_timeout` above this would give a slow-loris client
/// a connection for longer than any real client needs to send a head.
const MAX_HEAD_TIMEOUT: Duration = Duration::from_secs(300);

fn head_timeout(errors: &mut Errors, s: &Section) -> Duration {
    let timeout = s.positive_duration(errors, "request_head_timeout", secs(10));
    if timeout > MAX_HEAD_TIMEOUT {
        errors.add(
            s.key("request_head_timeout"),
            "must be at most 5m (a whole request head, from its first byte)",
        );
        return secs(10);
    }
    timeout
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
        let entry = Section::read(errors, path, table, |t, errors| {
            read_tls_entry(errors, t, base_dir)
        });
        listeners.extend(entry);
    }
    listeners
}

/// One `[[server.tls]]` entry; `None` when it has an error.
fn read_tls_entry(errors: &mut Errors, t: &Section, base_dir: &Path) -> Option<TlsListener> {
    let listen = match t.str(errors, "listen") {
        Some(text) => parse_listen(errors, &t.key("listen"), text),
        None => {
            if !t.has("listen") {
                errors.add(t.key("listen"), "missing");
            }
            None
        }
    };
    let mut file = |key: &'static str| -> Option<PathBuf> {
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
    let (listen, cert, key) = (listen?, cert?, key?);
    // Load them now as the server would: a bad pair is a config error with
    // its key path, never a panic at start.
    if let Err(e) = tls::load_certified_key(&cert, &key) {
        errors.add(t.key("cert"), e.to_string());
        return None;
    }
    Some(TlsListener {
        listen,
        cert,
        key,
        server_names,
    })
}

pub(super) fn read_admin(errors: &mut Errors, root: &Section, base_dir: &Path) -> AdminConfig {
    root.section(errors, "admin", |a, errors| {
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
    })
}
