//! Debian's HAProxy on loopback, in front of the same recording origin:
//! the reference the corpus is checked against when it is installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{free_port, loopback, TestDir};

/// The haproxy binary, if installed (`HAPROXY` overrides the path).
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HAPROXY") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

/// A running haproxy, killed on drop.
pub struct Haproxy {
    child: Child,
    pub listen: SocketAddr,
    _dir: TestDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// Starts `binary` with a minimal HTTP config proxying to `origin`, and
    /// waits (bounded) until it accepts connections.
    pub async fn start(binary: &std::path::Path, origin: SocketAddr) -> Haproxy {
        let dir = TestDir::new("haproxy");
        let listen = loopback(free_port());
        // Defaults only: the timeouts bound a case, nothing else is tuned.
        let config = format!(
            "global\n    maxconn 256\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n\
             \x20   timeout server 2s\n    timeout http-request 5s\n\
             frontend fe\n    bind {listen}\n    default_backend be\n\
             backend be\n    server origin {origin}\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let check = Command::new(binary)
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .status()
            .expect("run haproxy -c");
        assert!(check.success(), "haproxy rejects the test config");
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let mut haproxy = Haproxy {
            child,
            listen,
            _dir: dir,
        };
        let up = crate::common::eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        })
        .await;
        assert!(
            up && matches!(haproxy.child.try_wait(), Ok(None)),
            "haproxy did not start listening on {listen}"
        );
        haproxy
    }
}
