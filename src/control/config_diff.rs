//! What a reload changes, in words: the reload's answer and its audit
//! record say which pools, backends, weights and policies changed, so an
//! operator reading `history` knows what a revision did without diffing
//! files. Pure: two configs in, phrases out.

use crate::config::{BackendConfig, Config, PoolConfig};

/// One phrase per change, in a fixed order (pools, then sections).
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let added: Vec<&str> = new
        .pools
        .keys()
        .filter(|p| !old.pools.contains_key(*p))
        .map(String::as_str)
        .collect();
    if !added.is_empty() {
        out.push(format!("pools added: {}", added.join(", ")));
    }
    let removed: Vec<&str> = old
        .pools
        .keys()
        .filter(|p| !new.pools.contains_key(*p))
        .map(String::as_str)
        .collect();
    if !removed.is_empty() {
        out.push(format!("pools removed: {}", removed.join(", ")));
    }
    for (name, pool) in &new.pools {
        if let Some(before) = old.pools.get(name) {
            out.extend(pool_changes(name, before, pool));
        }
    }
    // A changed [split] is reconcile's to report (it says what it did).
    let sections = [
        ("[sticky]", old.sticky != new.sticky),
        ("[[route]]", old.routes != new.routes),
        ("[health]", old.health != new.health),
        ("[guard]", old.guard != new.guard),
        ("[canary]", old.canary != new.canary),
        ("[notify]", old.notify != new.notify),
        ("[server]", old.server != new.server),
        ("[admin]", old.admin != new.admin),
        ("[discovery]", old.discovery != new.discovery),
        ("[mirror]", old.mirror != new.mirror),
    ];
    out.extend(
        sections
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| format!("{name} changed")),
    );
    out
}

fn pool_changes(name: &str, old: &PoolConfig, new: &PoolConfig) -> Vec<String> {
    let mut out = Vec::new();
    let find = |list: &'_ [BackendConfig], b: &BackendConfig| {
        list.iter().find(|o| o.name == b.name).map(|o| o.weight)
    };
    let added: Vec<&str> = new
        .backends
        .iter()
        .filter(|b| find(&old.backends, b).is_none())
        .map(|b| b.name.as_str())
        .collect();
    if !added.is_empty() {
        out.push(format!("{name}: backends added: {}", added.join(", ")));
    }
    let removed: Vec<&str> = old
        .backends
        .iter()
        .filter(|b| find(&new.backends, b).is_none())
        .map(|b| b.name.as_str())
        .collect();
    if !removed.is_empty() {
        out.push(format!("{name}: backends removed: {}", removed.join(", ")));
    }
    for b in &new.backends {
        if let Some(weight) = find(&old.backends, b).filter(|w| *w != b.weight) {
            out.push(format!(
                "{name}: weight of {} {weight} -> {}",
                b.name, b.weight
            ));
        }
    }
    if old.dns != new.dns {
        let names = |list: &[crate::config::DnsBackend]| {
            list.iter()
                .map(|d| format!("{{ dns = \"{}\", weight = {} }}", d.name, d.weight))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "{name}: dns backends [{}] -> [{}]",
            names(&old.dns),
            names(&new.dns)
        ));
    }
    if old.upstream != new.upstream {
        out.push(format!("{name}: upstream settings changed"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        crate::config::parse(text, Path::new("/")).expect("valid")
    }

    #[test]
    fn names_pools_backends_weights_and_sections() {
        let old = config(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n\
             [pools.green]\nbackends = [\"127.0.0.1:9003\"]\n[split]\nblue = 100\n",
        );
        let new = config(
            "[pools.blue]\nbackends = [{ addr = \"127.0.0.1:9001\", weight = 3 }, \"127.0.0.1:9004\"]\n\
             [pools.red]\nbackends = [\"127.0.0.1:9005\"]\n[split]\nblue = 100\n[guard]\nmax_error_rate = 2.0\n",
        );
        assert_eq!(
            changes(&old, &new),
            [
                "pools added: red",
                "pools removed: green",
                "blue: backends added: 127.0.0.1:9004",
                "blue: backends removed: 127.0.0.1:9002",
                "blue: weight of 127.0.0.1:9001 1 -> 3",
                "[guard] changed",
            ]
        );
        assert!(changes(&old, &old).is_empty());
    }
}
