//! TLS for the tests: self-signed certificates generated on the spot and
//! rustls clients that trust them (pingora's own rustls re-exports).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::tls::{ClientConfig, RootCertStore, ServerName, TlsConnector};
use tokio::net::TcpStream;

/// A self-signed certificate for `names`: (cert PEM, key PEM, cert DER).
pub fn certificate(names: &[&str]) -> (String, String, Vec<u8>) {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let generated = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    (
        generated.cert.pem(),
        generated.key_pair.serialize_pem(),
        generated.cert.der().to_vec(),
    )
}

/// A client that trusts `trusted` and offers `alpn`.
pub fn client_config(trusted: &[&[u8]], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for der in trusted {
        roots
            .add(der.to_vec().into())
            .expect("trust the test certificate");
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub type TlsStream = pingora::tls::ClientTlsStream<TcpStream>;

/// Connects and completes the handshake within 10 s.
pub async fn tls_connect(addr: SocketAddr, sni: &str, config: Arc<ClientConfig>) -> TlsStream {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake")
}
