//! The active check of one backend: a GET over a fresh connection, spoken
//! the way the pool's requests go (plain or TLS, HTTP/1.1 or HTTP/2).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One backend as its pool talks to it.
pub(super) struct ProbeTarget {
    pub addr: std::net::SocketAddr,
    /// TLS server name and `Host`; empty for a backend given by IP.
    pub server_name: String,
    /// `Some` for a TLS pool: its client settings (`None` inside if they
    /// could not be built, which fails the probe rather than skip TLS).
    pub tls: Option<Option<Arc<pingora::tls::ClientConfig>>>,
    /// HTTP/2-only pool: probe with HTTP/2 (prior knowledge in clear).
    pub h2: bool,
}

/// GET `path` over a fresh connection, the way the pool's requests go (TLS,
/// HTTP/2); 2xx or 3xx within `timeout` passes.
pub(super) async fn probe(target: ProbeTarget, path: &str, timeout: Duration) -> bool {
    let host = if target.server_name.is_empty() {
        target.addr.to_string()
    } else {
        target.server_name.clone()
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(target.addr).await.ok()?;
        match &target.tls {
            None => exchange(tcp, target.h2, &host, path).await,
            Some(config) => {
                let name = if target.server_name.is_empty() {
                    pingora::tls::ServerName::IpAddress(target.addr.ip().into())
                } else {
                    pingora::tls::ServerName::try_from(target.server_name.clone()).ok()?
                };
                let connector = pingora::tls::TlsConnector::from(Arc::clone(config.as_ref()?));
                let stream = connector.connect(name, tcp).await.ok()?;
                exchange(stream, target.h2, &host, path).await
            }
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

async fn exchange<S>(stream: S, h2: bool, host: &str, path: &str) -> Option<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let status = if h2 {
        h2_status(stream, host, path).await?
    } else {
        h1_status(stream, host, path).await?
    };
    Some((200..400).contains(&status))
}

async fn h1_status<S>(mut stream: S, host: &str, path: &str) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let mut len = 0;
    // "HTTP/1.1 200" is 12 bytes; read until we have them.
    while len < 12 {
        let n = stream.read(&mut head[len..]).await.ok()?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = std::str::from_utf8(&head[..len]).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

async fn h2_status<S>(stream: S, host: &str, path: &str) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = h2::client::handshake(stream).await.ok()?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(format!("http://{host}{path}"))
        .header("user-agent", "switchyard-health")
        .body(())
        .ok()?;
    let status = async {
        let (response, _) = client.send_request(request, true).ok()?;
        Some(response.await.ok()?.status().as_u16())
    }
    .await;
    driver.abort();
    status
}
