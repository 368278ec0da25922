//! TLS material read from disk: PEM certificate chains, private keys and
//! CA bundles, each checked with an error that names the file (pingora's
//! own loaders panic on a bad file).
//!
//! A leaf: nothing here imports the rest of switchyard, so `config` can
//! check certificates while it validates a file, and the listeners and
//! upstream settings can build on the same checks, without a circle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, CryptoProvider, RootCertStore};

/// Why a certificate, key or CA bundle can't be used. The messages are the
/// ones the config check and the listener reload report (and tests quote).
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read \"{}\": {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("\"{}\": unreadable PEM: {detail}", path.display())]
    BadPem { path: PathBuf, detail: String },
    #[error("\"{}\" holds no PEM certificate (\"BEGIN CERTIFICATE\")", path.display())]
    NoCertificate { path: PathBuf },
    #[error("\"{}\" holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)", path.display())]
    NoKey { path: PathBuf },
    #[error("key \"{}\" cannot be used with certificate \"{}\": {detail}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        detail: String,
    },
    #[error("\"{}\": certificate #{index} is not a usable CA: {detail}", path.display())]
    NotCa {
        path: PathBuf,
        index: usize,
        detail: String,
    },
}

/// The rustls crypto provider switchyard uses: ring, as pingora does.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, MaterialError> {
    std::fs::read(path).map_err(|source| MaterialError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file, in order; an error if it has none.
fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let pem = read_pem(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::BadPem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(MaterialError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Loads a certificate chain and its private key, checking that the key
/// is supported and belongs to the first certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, MaterialError> {
    let chain = pem_certificates(cert)?;
    let key_pem = read_pem(key)?;
    let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| MaterialError::BadPem {
            path: key.to_path_buf(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| MaterialError::NoKey {
            path: key.to_path_buf(),
        })?;
    CertifiedKey::from_der(chain, private_key, &crypto_provider())
        .map(Arc::new)
        .map_err(|e| MaterialError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
            detail: e.to_string(),
        })
}

/// Loads a CA bundle for verifying backends: DER certificates, each one
/// checked to be a usable trust anchor.
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = pem_certificates(path)?;
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| MaterialError::NotCa {
            path: path.to_path_buf(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(certs)
}
