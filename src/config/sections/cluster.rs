//! `[cluster]` (SPEC §9): the etcd cluster a fleet of instances shares its
//! runtime state through, this instance's name in it, and the key prefix.
//! Only the text is checked here: whether etcd answers is a runtime fact
//! (`crate::cluster`), and an instance serves its last state without it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::resolve_path;
use crate::config::types::{ClusterConfig, ClusterTls};
use crate::config::walk::{expected, Errors, Section};

pub(super) fn read_cluster(
    errors: &mut Errors,
    root: &Section,
    base_dir: &Path,
) -> Option<ClusterConfig> {
    if !root.has("cluster") {
        return None;
    }
    let defaults = ClusterConfig::defaults();
    Some(root.section(errors, "cluster", |c, errors| {
        let endpoints = read_endpoints(errors, c);
        let name = match c.str(errors, "name") {
            Some(name) if valid_name(name) => name.to_string(),
            Some(name) => {
                errors.add(
                    c.key("name"),
                    format!("\"{name}\" is not a member name (1-63 of A-Z a-z 0-9 . _ -)"),
                );
                String::new()
            }
            None => {
                errors.add(c.key("name"), "required: this instance's name, unique in the fleet");
                String::new()
            }
        };
        let prefix = match c.str(errors, "prefix") {
            Some(p) if p.starts_with('/') && p.len() > 1 && !p.ends_with('/') => p.to_string(),
            Some(p) => {
                errors.add(
                    c.key("prefix"),
                    format!("\"{p}\" must start with '/' and not end with one (e.g. \"/switchyard/prod\")"),
                );
                defaults.prefix.clone()
            }
            None => defaults.prefix.clone(),
        };
        let lease_ttl = c.positive_duration(errors, "lease_ttl", defaults.lease_ttl);
        if lease_ttl.subsec_nanos() != 0 || !(1..=60).contains(&lease_ttl.as_secs()) {
            errors.add(
                c.key("lease_ttl"),
                "whole seconds from 1s to 60s (etcd leases count in seconds)",
            );
        }
        let publish_interval =
            c.positive_duration(errors, "publish_interval", defaults.publish_interval);
        if publish_interval > Duration::from_millis(250) {
            errors.add(
                c.key("publish_interval"),
                "at most 250ms: the leader's guard sums what members published",
            );
        }
        let timeout = c.positive_duration(errors, "timeout", defaults.timeout);
        let tls = read_tls(errors, c, base_dir);
        if tls.is_some() && endpoints.iter().any(|e| e.starts_with("http://")) {
            errors.add(
                c.key("etcd"),
                "with ca_file/cert_file set, every endpoint must be https://",
            );
        }
        let username = c.str(errors, "username").map(str::to_string);
        let password_file = c.str(errors, "password_file").map(|t| resolve_path(base_dir, t));
        if username.is_some() != password_file.is_some() {
            errors.add(
                c.key("username"),
                "username and password_file go together (etcd authentication)",
            );
        }
        ClusterConfig {
            endpoints,
            name,
            prefix,
            lease_ttl,
            publish_interval,
            timeout,
            tls,
            username,
            password_file,
        }
    }))
}

fn read_endpoints(errors: &mut Errors, c: &Section) -> Vec<String> {
    let mut endpoints = Vec::new();
    let Some(items) = c.array(errors, "etcd") else {
        errors.add(
            c.key("etcd"),
            "required: the etcd endpoints, e.g. [\"http://127.0.0.1:2379\"]",
        );
        return endpoints;
    };
    for (i, item) in items.iter().enumerate() {
        let path = format!("{}[{i}]", c.key("etcd"));
        match item.as_str() {
            Some(text) if valid_endpoint(text) => {
                if endpoints.iter().any(|e| e == text) {
                    errors.add(&path, format!("\"{text}\" is listed twice"));
                } else {
                    endpoints.push(text.to_string());
                }
            }
            Some(text) => errors.add(
                &path,
                format!(
                    "\"{text}\" is not an etcd endpoint (http://HOST:PORT or https://HOST:PORT)"
                ),
            ),
            None => expected(errors, &path, "an endpoint string", item),
        }
    }
    if endpoints.is_empty() && !items.is_empty() {
        return endpoints;
    }
    if items.is_empty() {
        errors.add(c.key("etcd"), "at least one endpoint");
    }
    endpoints
}

/// `http://host:port` or `https://host:port`, nothing after the port.
fn valid_endpoint(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    else {
        return false;
    };
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains('/')
                && port.parse::<u16>().map(|p| p > 0).unwrap_or(false)
        }
        None => false,
    }
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `ca_file`, and `cert_file` + `key_file` for client certificates. The
/// files must exist at load, so a typo is a config error, not an outage.
fn read_tls(errors: &mut Errors, c: &Section, base_dir: &Path) -> Option<ClusterTls> {
    let mut file = |key: &'static str| -> Option<PathBuf> {
        let path = resolve_path(base_dir, c.str(errors, key)?);
        if path.is_file() {
            Some(path)
        } else {
            errors.add(c.key(key), format!("cannot read {}", path.display()));
            None
        }
    };
    let ca_file = file("ca_file");
    let cert_file = file("cert_file");
    let key_file = file("key_file");
    if cert_file.is_some() != key_file.is_some() {
        errors.add(c.key("cert_file"), "cert_file and key_file go together");
    }
    (ca_file.is_some() || cert_file.is_some()).then_some(ClusterTls {
        ca_file,
        cert_file,
        key_file,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::parse;

    const POOLS: &str = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[split]\nblue = 100\n";

    fn errors(cluster: &str) -> String {
        match parse(&format!("{POOLS}{cluster}"), Path::new("/")) {
            Ok(_) => panic!("expected errors for:\n{cluster}"),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn no_cluster_section_is_no_fleet() {
        let config = parse(POOLS, Path::new("/")).expect("valid");
        assert_eq!(config.cluster, None);
    }

    #[test]
    fn a_cluster_section_with_defaults() {
        let text = format!(
            "{POOLS}[cluster]\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.1:22379\"]\nname = \"edge-1\"\n"
        );
        let c = parse(&text, Path::new("/"))
            .expect("valid")
            .cluster
            .expect("cluster");
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.name, "edge-1");
        assert_eq!(c.prefix, "/switchyard");
        assert_eq!(c.lease_ttl, Duration::from_secs(3));
        assert_eq!(c.publish_interval, Duration::from_millis(200));
        assert_eq!(c.tls, None);
    }

    #[test]
    fn bad_cluster_values_are_named_by_key() {
        let e = errors("[cluster]\netcd = [\"127.0.0.1:2379\"]\nname = \"edge 1\"\nprefix = \"sy/\"\nlease_ttl = \"1500ms\"\npublish_interval = \"1s\"\n");
        for needle in [
            "cluster.etcd[0]",
            "cluster.name",
            "cluster.prefix",
            "cluster.lease_ttl",
            "cluster.publish_interval",
        ] {
            assert!(e.contains(needle), "{needle} missing in:\n{e}");
        }
        assert!(errors("[cluster]\nname = \"a\"\n").contains("cluster.etcd"));
        assert!(errors("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n").contains("cluster.name"));
        assert!(errors(
            "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"a\"\nusername = \"u\"\n"
        )
        .contains("password_file"));
        assert!(errors("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"a\"\nca_file = \"/nonexistent/ca.pem\"\n")
            .contains("cluster.ca_file"));
    }
}
