//! TLS for the tests: self-signed certificates generated on the spot and
//! rustls clients that trust them (pingora's own rustls re-exports).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

/// One GET over an established TLS stream, HTTP/2 or HTTP/1.1 as negotiated.
pub async fn get_over(stream: TlsStream, authority: &str, path: &str) -> (u16, String) {
    get_over_with(stream, authority, path, &[]).await
}

/// [`get_over`] with extra request headers.
pub async fn get_over_with(
    stream: TlsStream,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut request =
        http::Request::get(format!("https://{authority}{path}")).header("host", authority);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("request");
    let exchange = async {
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(connection);
            // HTTP/2 requests carry the authority in the URI, not `Host`.
            let (mut parts, body) = request.into_parts();
            parts.headers.remove("host");
            sender
                .send_request(http::Request::from_parts(parts, body))
                .await
                .expect("h2 response")
        } else {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("h1 handshake");
            tokio::spawn(connection);
            let (mut parts, body) = request.into_parts();
            parts.uri = path.parse().expect("path");
            sender
                .send_request(http::Request::from_parts(parts, body))
                .await
                .expect("h1 response")
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("response in time")
}
