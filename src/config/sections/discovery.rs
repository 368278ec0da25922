//! `{ dns = "NAME:PORT" }` backends and the `[discovery]` section that says
//! how their names are resolved. Only the text is checked here: whether a
//! name resolves is a runtime fact (`crate::discovery`), and `switchyard
//! check` reports a name that does not as a warning, never an error.

use std::net::SocketAddr;

use super::secs;
use crate::config::types::{DiscoveryConfig, DnsBackend};
use crate::config::walk::{Errors, Section};

/// One `{ dns = "NAME:PORT", weight = N, allow_empty = B }` entry.
pub(super) fn read_dns_backend(errors: &mut Errors, b: &Section, text: &str) -> Option<DnsBackend> {
    let weight = b.int(errors, "weight", 1..=1000).unwrap_or(1) as u32;
    let allow_empty = b.boolean(errors, "allow_empty");
    let Some((host, port)) = split_name(text) else {
        errors.add(
            b.key("dns"),
            format!(
                "\"{text}\" is not NAME:PORT (a DNS name and a port, e.g. \"app.internal:8080\")"
            ),
        );
        return None;
    };
    Some(DnsBackend {
        name: text.to_string(),
        host,
        port,
        weight,
        allow_empty,
    })
}

/// `NAME:PORT` → (lower-case name without a trailing dot, port). The name
/// must be a DNS name: an IP address belongs in `addr`.
fn split_name(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = host.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    (!host.is_empty() && host.len() <= 253 && labels_ok && !is_ip)
        .then(|| (host.to_ascii_lowercase(), port))
}

/// `[discovery]`: nameservers (`"ip:port"`, default the system's
/// resolv.conf), `refresh`, `min_ttl`, `timeout`, `allow_empty`.
pub(super) fn read_discovery(errors: &mut Errors, root: &Section) -> DiscoveryConfig {
    let defaults = DiscoveryConfig::default();
    root.section(errors, "discovery", |d, errors| {
        let mut nameservers = Vec::new();
        for (i, item) in d
            .array(errors, "nameservers")
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("{}[{i}]", d.key("nameservers"));
            match item.as_str().map(|t| (t, t.parse::<SocketAddr>())) {
                Some((_, Ok(addr))) if !nameservers.contains(&addr) => nameservers.push(addr),
                Some((text, Ok(_))) => errors.add(&path, format!("\"{text}\" is listed twice")),
                Some((text, Err(_))) => errors.add(
                    &path,
                    format!("invalid nameserver \"{text}\" (expected ip:port, e.g. \"10.0.0.2:53\")"),
                ),
                None => crate::config::walk::expected(errors, &path, "an \"ip:port\" string", item),
            }
        }
        let refresh = d.positive_duration(errors, "refresh", defaults.refresh);
        let min_ttl = d.positive_duration(errors, "min_ttl", defaults.min_ttl);
        if min_ttl > refresh {
            errors.add(
                d.key("min_ttl"),
                "must not be longer than refresh (it only bounds how early a short TTL brings a lookup forward)",
            );
        }
        let timeout = d.positive_duration(errors, "timeout", defaults.timeout);
        if timeout > secs(60) {
            errors.add(d.key("timeout"), "at most 60s");
        }
        DiscoveryConfig {
            nameservers,
            refresh,
            min_ttl,
            timeout,
            allow_empty: d.boolean(errors, "allow_empty").unwrap_or(false),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{parse, DnsBackend};

    fn errors(text: &str) -> String {
        match parse(text, Path::new("/")) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(errors) => errors.to_string(),
        }
    }

    #[test]
    fn a_dns_backend_needs_no_resolution_to_be_valid_and_counts_as_a_backend() {
        let text = "[pools.green]\nbackends = [\"127.0.0.1:9001\", { dns = \"Green.Internal.:8080\", weight = 3 }]\n\
                    [pools.canary]\nbackends = [{ dns = \"canary.internal:80\", allow_empty = true }]\n\
                    [split]\ngreen = 50\ncanary = 50\n";
        let config = parse(text, Path::new("/")).expect("valid");
        let green = &config.pools["green"];
        assert_eq!(green.backends.len(), 1);
        assert_eq!(
            green.dns,
            [DnsBackend {
                name: "Green.Internal.:8080".into(),
                host: "green.internal".into(),
                port: 8080,
                weight: 3,
                allow_empty: None,
            }]
        );
        assert_eq!(config.pools["canary"].dns[0].allow_empty, Some(true));
        // A pool whose only backend is a name may take a share.
        assert!(config.pools["canary"].has_backends());
        let d = &config.discovery;
        assert!(
            d.nameservers.is_empty(),
            "default: the system's resolv.conf"
        );
        assert_eq!(
            (d.refresh, d.min_ttl, d.timeout, d.allow_empty),
            (
                Duration::from_secs(5),
                Duration::from_secs(1),
                Duration::from_secs(2),
                false
            )
        );
    }

    #[test]
    fn golden_dns_backend_errors() {
        assert_eq!(
            errors(
                "[pools.green]\nbackends = [{ dns = \"10.0.0.1:80\" }, { dns = \"app:0\" }, \
                 { dns = \"a..b:80\" }, { dns = \"app.x:80\", addr = \"127.0.0.1:1\" }, \
                 { dns = \"app.y:80\" }, { dns = \"APP.y:80\" }, { dns = \"app.z:80\", colour = 1 }, { dns = 5 }]\n"
            ),
            "pools.green.backends[0].dns: \"10.0.0.1:80\" is not NAME:PORT (a DNS name and a port, e.g. \"app.internal:8080\")\n\
             pools.green.backends[1].dns: \"app:0\" is not NAME:PORT (a DNS name and a port, e.g. \"app.internal:8080\")\n\
             pools.green.backends[2].dns: \"a..b:80\" is not NAME:PORT (a DNS name and a port, e.g. \"app.internal:8080\")\n\
             pools.green.backends[3]: give either addr (one address) or dns (every address of a name), not both\n\
             pools.green.backends[5]: { dns = \"APP.y:80\" } is listed twice in this pool\n\
             pools.green.backends[6].colour: unknown key\n\
             pools.green.backends[7].dns: expected a string, found an integer\n"
        );
    }

    #[test]
    fn golden_discovery_section_errors() {
        assert_eq!(
            errors(
                "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[discovery]\n\
                 nameservers = [\"127.0.0.1\", \"127.0.0.1:53\", \"127.0.0.1:53\", 53]\n\
                 refresh = \"1s\"\nmin_ttl = \"2s\"\ntimeout = \"0s\"\nretries = 2\n"
            ),
            "discovery.retries: unknown key\n\
             discovery.nameservers[0]: invalid nameserver \"127.0.0.1\" (expected ip:port, e.g. \"10.0.0.2:53\")\n\
             discovery.nameservers[2]: \"127.0.0.1:53\" is listed twice\n\
             discovery.nameservers[3]: expected an \"ip:port\" string, found an integer\n\
             discovery.min_ttl: must not be longer than refresh (it only bounds how early a short TTL brings a lookup forward)\n\
             discovery.timeout: must be greater than 0\n"
        );
    }
}
