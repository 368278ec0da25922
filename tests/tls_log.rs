//! What a TLS client can make the proxy write to its log (real binary,
//! real rustls client, loopback): a flood of handshakes that present an IP
//! address as SNI, or that fail, leaves a handful of lines, not one per
//! connection.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The client's name: as long as "127.0.0.1", so that it can be replaced
/// in the ClientHello without changing any length.
const NAME: &str = "ip.attack";
const IP_SNI: &[u8] = b"127.0.0.1";
const HANDSHAKES: usize = 1000;

/// A self-signed certificate for [`NAME`]: (cert PEM, key PEM, cert DER).
fn certificate() -> (String, String, Vec<u8>) {
    let generated =
        rcgen::generate_simple_self_signed(vec![NAME.to_string()]).expect("generate certificate");
    (
        generated.cert.pem(),
        generated.key_pair.serialize_pem(),
        generated.cert.der().to_vec(),
    )
}

fn client_config(der: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(der.to_vec()))
        .expect("trust the test certificate");
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(config)
}

/// One handshake whose ClientHello carries "127.0.0.1" as its SNI host
/// name. rustls clients never send an IP address as SNI, so the client
/// says [`NAME`] and the bytes are replaced on the wire; the server reads
/// the hello, answers with its whole flight, and the handshake then fails
/// (the two sides hashed different hellos). Returns whether the server
/// answered the hello.
fn ip_sni_handshake(addr: SocketAddr, config: &Arc<ClientConfig>) -> bool {
    let name = ServerName::try_from(NAME).expect("server name");
    let mut client = ClientConnection::new(Arc::clone(config), name).expect("client");
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).expect("ClientHello");
    }
    let at = hello
        .windows(NAME.len())
        .position(|w| w == NAME.as_bytes())
        .expect("SNI in the ClientHello");
    hello[at..at + IP_SNI.len()].copy_from_slice(IP_SNI);

    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    tcp.write_all(&hello).expect("send ClientHello");
    let mut answered = false;
    let mut buf = [0u8; 16 * 1024];
    // Bounded: the server's flight is a few records, and every read has a
    // deadline.
    for _ in 0..64 {
        let n = match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        answered = true;
        let mut bytes = &buf[..n];
        if client.read_tls(&mut bytes).is_err() || client.process_new_packets().is_err() {
            // The transcript mismatch: tell the server, as a client would.
            let mut alert = Vec::new();
            let _ = client.write_tls(&mut alert);
            let _ = tcp.write_all(&alert);
            break;
        }
        if !client.is_handshaking() {
            break;
        }
    }
    answered
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_ip_sni_handshakes_write_a_handful_of_lines() {
    let blue = origin("blue").await;
    let certs = TestDir::new("tls-log");
    let (cert, key, der) = certificate();
    std::fs::write(certs.path().join("cert.pem"), cert).unwrap();
    std::fs::write(certs.path().join("key.pem"), key).unwrap();
    let tls_addr = loopback(free_port());
    let proxy = Proxy::start_with(
        &format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n",
            d = certs.path().display()
        ),
        &format!(
            "[pools.blue]\nbackends = [\"{}\"]\n[split]\nblue = 100\n",
            blue.addr()
        ),
    )
    .await;
    let before = proxy.log().lines().count();

    let config = client_config(&der);
    let answered = tokio::task::spawn_blocking(move || {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    (0..HANDSHAKES / 4)
                        .filter(|_| ip_sni_handshake(tls_addr, &config))
                        .count()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("handshake thread"))
            .sum::<usize>()
    })
    .await
    .expect("handshakes");
    // Every hello was read and answered: the flood really reached rustls.
    assert_eq!(answered, HANDSHAKES);

    // The proxy still serves TLS clients.
    assert!(ip_sni_handshake(tls_addr, &client_config(&der)));

    let log = proxy.log();
    let new: Vec<&str> = log.lines().skip(before).collect();
    let summary = format!(
        "{} new log lines for {HANDSHAKES} handshakes ({} rustls SNI warnings, {} handshake errors); the first:\n{}",
        new.len(),
        lines_with(&log, "Illegal SNI"),
        lines_with(&log, "Downstream handshake error"),
        new.iter().take(12).copied().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(lines_with(&log, "SNI"), 0, "{summary}");
    assert!(
        new.len() <= 2 * switchyard::process::logging::BURST as usize,
        "{summary}"
    );
    drop(proxy);
}
