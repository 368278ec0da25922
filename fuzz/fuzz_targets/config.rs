//! The config loader: TOML text through `config::parse`, the function
//! `switchyard check` and every reload use (`config::load` only reads the
//! file first), with an empty temp dir as the base of relative paths.
//!
//! The loader resolves `host:port` backends with the system resolver and
//! opens certificate files: inputs whose strings would send a DNS query or
//! open a file outside the empty base dir are skipped, so a fuzz run stays
//! on this machine and never blocks on a device file.
//!
//! Properties: a rejected file has at least one error and every error says
//! something; an accepted one is what the rest of the proxy relies on
//! without checking again — the split names every pool and sums to 100 %,
//! and a routing table builds from it with the same pools and shares. The
//! same text gives the same answer twice.

#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use switchyard::config::{self, Share};
use switchyard::routing::RoutingTable;

fn base_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("switchyard-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the empty base dir");
        dir
    })
}

/// Would the loader look this string up in DNS: a backend `host:port` that
/// is not an IP literal (any string of that shape is skipped, whatever its
/// key)?
fn asks_dns(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return false;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// The keys whose files the loader opens (certificates, keys, CA bundles).
const FILE_KEYS: [&str; 3] = ["cert", "key", "ca_file"];

/// Does any string in `value` ask for DNS, or name a file to open outside
/// the base dir?
fn leaves_the_sandbox(key: &str, value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => {
            asks_dns(s) || (FILE_KEYS.contains(&key) && (s.starts_with('/') || s.contains("..")))
        }
        toml::Value::Array(items) => items.iter().any(|v| leaves_the_sandbox(key, v)),
        toml::Value::Table(table) => table.iter().any(|(k, v)| leaves_the_sandbox(k, v)),
        _ => false,
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(document) = text.parse::<toml::Table>() {
        if document.iter().any(|(k, v)| leaves_the_sandbox(k, v)) {
            return;
        }
    }
    let result = config::parse(text, base_dir());
    assert_eq!(
        result,
        config::parse(text, base_dir()),
        "same text, same answer"
    );
    let config = match result {
        Ok(config) => config,
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without an error");
            for error in &errors.0 {
                assert!(
                    !error.message.is_empty(),
                    "an empty message at {}",
                    error.path
                );
            }
            assert!(!errors.to_string().is_empty());
            return;
        }
    };
    assert!(!config.pools.is_empty(), "accepted with no pool");
    assert!(
        config.split.keys().eq(config.pools.keys()),
        "the split names exactly the pools"
    );
    let sum: u32 = config.split.values().map(|s| u32::from(s.units())).sum();
    assert_eq!(
        sum,
        u32::from(Share::FULL.units()),
        "the split sums to 100 %"
    );

    let table = RoutingTable::as_written(Arc::new(config.clone()));
    assert_eq!(table.pools.len(), config.pools.len());
    assert_eq!(table.split, config.split);
});
