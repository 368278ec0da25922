//! DNS service discovery: `{ dns = "NAME:PORT" }` backends are every A/AAAA
//! address NAME resolves to, followed at runtime (SPEC §12).
//!
//! - `resolve`: one lookup with `hickory-resolver` (explicit nameservers or
//!   the system's resolv.conf), failures sorted by kind
//! - `service`: the background service that resolves each name on its
//!   schedule (refresh, TTL, `min_ttl`) and hands changed answers to the
//!   controller (`crate::control::discovered`), which publishes them in one
//!   table swap; addresses that stay keep their health and statistics
//!
//! Nothing here runs on the request path: a request reads the table the
//! last answer built. A failed lookup keeps the last good set.

pub mod resolve;
pub mod service;

use crate::config::Config;

/// `switchyard check`'s look at the `dns` backends: one lookup of each
/// name now, with the file's `[discovery]`. A name that does not resolve is
/// a warning, not an error: the proxy starts anyway and the pool gets the
/// name's addresses once it resolves. Returns one line per warning.
pub fn check_names(config: &Config) -> Vec<String> {
    let names: Vec<(String, String, String)> = config
        .pools
        .iter()
        .flat_map(|(pool, p)| {
            p.dns
                .iter()
                .map(move |d| (pool.clone(), d.name.clone(), d.host.clone()))
        })
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return vec![format!("discovery: cannot check the dns backends: {e}")],
    };
    runtime.block_on(async {
        let resolver = match resolve::Resolver::new(&config.discovery) {
            Ok(resolver) => resolver,
            Err(e) => return vec![format!("discovery: {e}; no dns backend can resolve")],
        };
        let mut warnings = Vec::new();
        for (pool, name, host) in names {
            if let Err(e) = resolver.lookup(&host).await {
                warnings.push(format!(
                    "pools.{pool}.backends: {{ dns = \"{name}\" }} does not resolve now: {e} (the proxy starts anyway; the pool gets its addresses once it resolves)"
                ));
            }
        }
        warnings
    })
}
