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

/// A TLS front for a plaintext origin on `127.0.0.1:0`: each connection's
/// handshake (certificate `cert_pem`/`key_pem`, ALPN `http/1.1`) is counted,
/// then its decrypted bytes are relayed both ways over a TCP connection of
/// its own to `origin`, so the origin sees one connection per TLS one.
pub struct TlsFront {
    pub addr: SocketAddr,
    handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(origin: SocketAddr, cert_pem: &str, key_pem: &str) -> TlsFront {
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .expect("key PEM")
            .expect("a key");
        let mut config = pingora::tls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("front TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = pingora::tls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS front");
        let addr = listener.local_addr().expect("front address");
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&handshakes);
        let task = tokio::spawn(async move {
            // Aborting the task closes every relayed connection with it.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let counter = Arc::clone(&counter);
                        connections.spawn(async move {
                            let handshake = tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(tcp),
                            );
                            let Ok(Ok(mut tls)) = handshake.await else { return };
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let Ok(mut plain) = TcpStream::connect(origin).await else { return };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        TlsFront {
            addr,
            handshakes,
            task,
        }
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
