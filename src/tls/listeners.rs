//! Downstream TLS: the certificates of each listener, chosen by SNI through
//! [`SniResolver`], whose contents are swapped atomically when the files on
//! disk change ([`CertReloadService`]), so new connections get the new
//! certificate without a restart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};

use super::material::{load_certified_key, MaterialError};
use crate::config::TlsListener;

/// Why a listener's certificates can't be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("a TLS listener without certificates")]
    NoCertificates,
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error("TLS listener {addr}: {source}")]
    At {
        addr: SocketAddr,
        source: Box<ListenerError>,
    },
}

/// The certificates of one listener: one per server name, plus a default.
#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// Loads every entry of a listener. The entry without `server_names` is
    /// the default; when every entry has names, the first one is.
    fn load(entries: &[TlsListener]) -> Result<CertSet, ListenerError> {
        let has_unnamed = entries.iter().any(|e| e.server_names.is_empty());
        let mut default = None;
        let mut by_name = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let key = load_certified_key(&entry.cert, &entry.key)?;
            for name in &entry.server_names {
                by_name.insert(name.clone(), Arc::clone(&key));
            }
            let is_default = if has_unnamed {
                entry.server_names.is_empty()
            } else {
                i == 0
            };
            if is_default && default.is_none() {
                default = Some(key);
            }
        }
        let default = default.ok_or(ListenerError::NoCertificates)?;
        Ok(CertSet { default, by_name })
    }

    /// Exact name first, then a `*.example.com` entry for `a.example.com`.
    fn choose(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return Arc::clone(&self.default);
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = self.by_name.get(&name) {
            return Arc::clone(key);
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.by_name.get(&format!("*.{parent}")) {
                return Arc::clone(key);
            }
        }
        Arc::clone(&self.default)
    }
}

/// Chooses a listener's certificate by SNI from a set that can be replaced
/// while connections are being accepted.
#[derive(Debug)]
pub struct SniResolver {
    certs: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().choose(hello.server_name()))
    }
}

/// What identifies a file's contents cheaply: changes when it is rewritten,
/// replaced by rename or re-pointed by a symlink swap (Kubernetes secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// One TLS listener address: its configured entries, the resolver pingora
/// uses for it, and the file stamps its certificates were loaded from.
#[derive(Debug)]
pub struct ListenerCerts {
    pub addr: SocketAddr,
    entries: Vec<TlsListener>,
    pub resolver: Arc<SniResolver>,
    loaded_from: Mutex<Vec<Option<FileStamp>>>,
}

impl ListenerCerts {
    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.entries.iter().flat_map(|e| [&e.cert, &e.key])
    }

    fn stamps(&self) -> Vec<Option<FileStamp>> {
        self.files().map(|p| stamp(p)).collect()
    }

    /// Reloads the certificates if any file changed since the last load.
    /// `None`: nothing changed. A failed load keeps the certificates in use.
    pub fn reload_if_changed(&self) -> Option<Result<(), ListenerError>> {
        let now = self.stamps();
        let mut loaded_from = self.loaded_from.lock();
        if *loaded_from == now {
            return None;
        }
        // Remember the stamps even on failure so a broken file is reported
        // once, not every second; the next write to it is tried again.
        *loaded_from = now;
        Some(CertSet::load(&self.entries).map(|set| self.resolver.certs.store(Arc::new(set))))
    }
}

/// Groups `[[server.tls]]` entries by listen address (several certificates
/// may share one listener by SNI) and loads each group's certificates.
pub fn load_listeners(entries: &[TlsListener]) -> Result<Vec<Arc<ListenerCerts>>, ListenerError> {
    let mut groups: Vec<(SocketAddr, Vec<TlsListener>)> = Vec::new();
    for entry in entries {
        match groups.iter_mut().find(|(addr, _)| *addr == entry.listen) {
            Some((_, group)) => group.push(entry.clone()),
            None => groups.push((entry.listen, vec![entry.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(addr, entries)| {
            let stamps_before: Vec<_> = entries
                .iter()
                .flat_map(|e| [stamp(&e.cert), stamp(&e.key)])
                .collect();
            let set = CertSet::load(&entries).map_err(|e| ListenerError::At {
                addr,
                source: Box::new(e),
            })?;
            Ok(Arc::new(ListenerCerts {
                addr,
                entries,
                resolver: Arc::new(SniResolver {
                    certs: ArcSwap::from_pointee(set),
                }),
                loaded_from: Mutex::new(stamps_before),
            }))
        })
        .collect()
}

/// Checks the certificate files of every TLS listener once a second and
/// swaps in the new certificates when they change. Polling `stat` is cheap
/// and sees every way a file can be replaced, symlink swaps included.
pub struct CertReloadService {
    listeners: Vec<Arc<ListenerCerts>>,
}

impl CertReloadService {
    pub fn new(listeners: Vec<Arc<ListenerCerts>>) -> Self {
        CertReloadService { listeners }
    }
}

pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for CertReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(CERT_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            for listener in &self.listeners {
                match listener.reload_if_changed() {
                    None => {}
                    Some(Ok(())) => {
                        log::info!("TLS listener {}: certificates reloaded", listener.addr)
                    }
                    Some(Err(e)) => log::error!(
                        "TLS listener {}: certificate reload failed, still serving the previous ones: {e}",
                        listener.addr
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_for(name: &str) -> Arc<CertifiedKey> {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("sy-tls-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
        let loaded = load_certified_key(&cert, &key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let (default, exact, wildcard) = (
            key_for("default.test"),
            key_for("a.test"),
            key_for("w.test"),
        );
        let set = CertSet {
            default: Arc::clone(&default),
            by_name: HashMap::from([
                ("a.test".to_string(), Arc::clone(&exact)),
                ("*.shop.test".to_string(), Arc::clone(&wildcard)),
            ]),
        };
        assert!(Arc::ptr_eq(&set.choose(Some("a.test")), &exact));
        assert!(
            Arc::ptr_eq(&set.choose(Some("A.Test")), &exact),
            "names are case-insensitive"
        );
        assert!(Arc::ptr_eq(&set.choose(Some("eu.shop.test")), &wildcard));
        assert!(
            Arc::ptr_eq(&set.choose(Some("a.eu.shop.test")), &default),
            "a wildcard covers one label"
        );
        assert!(Arc::ptr_eq(&set.choose(Some("shop.test")), &default));
        assert!(
            Arc::ptr_eq(&set.choose(None), &default),
            "no SNI gets the default"
        );
    }
}
