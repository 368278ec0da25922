//! TLS material for both sides of the proxy.
//!
//! Downstream: certificates and keys are loaded with a clear error (pingora's
//! own loader panics on a bad file), grouped per listener and chosen by SNI
//! through [`SniResolver`], whose contents are swapped atomically when the
//! files on disk change ([`CertReloadService`]), so new connections get the
//! new certificate without a restart.
//!
//! Upstream: CA bundles for pools that connect to their backends over TLS,
//! and the rustls client settings the health probes use for such pools.

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
use pingora::tls::{
    CertificateDer, ClientConfig, ClientHello, CryptoProvider, DigitallySignedStruct,
    HandshakeSignatureValid, ResolvesServerCert, RootCertStore, RusTlsError, ServerCertVerified,
    ServerCertVerifier, ServerName, SignatureScheme, UnixTime,
};

use crate::config::TlsListener;

/// The rustls crypto provider switchyard uses: ring, as pingora does.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))
}

/// Every certificate of a PEM file, in order; an error if it has none.
fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("\"{}\": unreadable PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "\"{}\" holds no PEM certificate (\"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// Loads a certificate chain and its private key, checking that the key
/// is supported and belongs to the first certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain = pem_certificates(cert)?;
    let key_pem = read_pem(key)?;
    let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("\"{}\": unreadable PEM: {e}", key.display()))?
        .ok_or_else(|| {
            format!(
                "\"{}\" holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)",
                key.display()
            )
        })?;
    CertifiedKey::from_der(chain, private_key, &crypto_provider())
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "key \"{}\" cannot be used with certificate \"{}\": {e}",
                key.display(),
                cert.display()
            )
        })
}

/// Loads a CA bundle for verifying backends: DER certificates, each one
/// checked to be a usable trust anchor.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = pem_certificates(path)?;
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "\"{}\": certificate #{} is not a usable CA: {e}",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok(certs)
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
    fn load(entries: &[TlsListener]) -> Result<CertSet, String> {
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
        let default = default.ok_or("a TLS listener without certificates")?;
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
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
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
pub fn load_listeners(entries: &[TlsListener]) -> Result<Vec<Arc<ListenerCerts>>, String> {
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
            let set = CertSet::load(&entries).map_err(|e| format!("TLS listener {addr}: {e}"))?;
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

/// rustls client settings for a health probe of a TLS pool: the pool's CA
/// bundle (else the system's), verification as configured, and the ALPN
/// protocols the probe speaks.
pub fn probe_client_config(
    ca: &[CertificateDer<'static>],
    verify: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, String> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        if ca.is_empty() {
            let _ = pingora::tls::load_platform_certs_incl_env_into_store(&mut roots);
        } else {
            for cert in ca {
                roots.add(cert.clone()).map_err(|e| e.to_string())?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// For pools configured with `verify = false`: signatures are still checked,
/// the certificate's issuer and name are not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RusTlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A pool's CA bundle in the form pingora's upstream TLS wants, built once
/// per routing table. Parsing reports an error (pingora's own parser would
/// panic); certificates were already checked when the config was loaded.
pub fn upstream_ca(
    certs: &[CertificateDer<'static>],
) -> Result<Option<Arc<pingora::protocols::tls::CaType>>, String> {
    use pingora::utils::tls::WrappedX509;
    use x509_parser::prelude::{FromDer, X509Certificate};
    if certs.is_empty() {
        return Ok(None);
    }
    let wrapped = certs
        .iter()
        .map(|cert| {
            WrappedX509::try_new(cert.to_vec(), |raw| {
                X509Certificate::from_der(raw)
                    .map(|(_, parsed)| parsed)
                    .map_err(|e| format!("unparsable CA certificate: {e}"))
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some(Arc::from(wrapped.into_boxed_slice())))
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
