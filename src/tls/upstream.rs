//! Upstream TLS: the CA bundle of a pool in the form pingora's connector
//! wants, and the rustls client settings of the health probes of TLS pools.
//!
//! Built once per routing table, off the request path. Apart from the
//! crypto provider of [`super::material`] this imports nothing of
//! switchyard (routing builds on it).

use std::sync::Arc;

use pingora::tls::{
    CertificateDer, ClientConfig, CryptoProvider, DigitallySignedStruct, HandshakeSignatureValid,
    RootCertStore, RusTlsError, ServerCertVerified, ServerCertVerifier, ServerName,
    SignatureScheme, UnixTime,
};

use super::material::crypto_provider;

/// Why a pool's upstream TLS settings can't be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{0}")]
    Settings(String),
    #[error("unparsable CA certificate: {0}")]
    UnparsableCa(String),
}

/// rustls client settings for a health probe of a TLS pool: the pool's CA
/// bundle (else the system's), verification as configured, and the ALPN
/// protocols the probe speaks.
pub fn probe_client_config(
    ca: &[CertificateDer<'static>],
    verify: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamTlsError::Settings(e.to_string()))?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        if ca.is_empty() {
            let _ = pingora::tls::load_platform_certs_incl_env_into_store(&mut roots);
        } else {
            for cert in ca {
                roots
                    .add(cert.clone())
                    .map_err(|e| UpstreamTlsError::Settings(e.to_string()))?;
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
) -> Result<Option<Arc<pingora::protocols::tls::CaType>>, UpstreamTlsError> {
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
                    .map_err(|e| UpstreamTlsError::UnparsableCa(e.to_string()))
            })
        })
        .collect::<Result<Vec<_>, UpstreamTlsError>>()?;
    Ok(Some(Arc::from(wrapped.into_boxed_slice())))
}
