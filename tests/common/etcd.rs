//! A real etcd cluster for the fleet tests: 1 or 3 members (`/usr/bin/etcd`,
//! etcd 3.4) on free loopback ports, each with its data dir under one
//! [`TestDir`]. Start waits until the cluster answers (bounded); members can
//! be killed (SIGKILL), stopped all at once and started again on the same
//! ports and data, so a test sees the same cluster come back.
//!
//! [`Etcd::start_secure`] adds what production runs: client TLS with
//! client certificates (a CA, a server and a client certificate generated
//! with rcgen into the cluster's dir) and/or authentication (user `root`
//! with a password, `auth enable`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TestDir};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// `Some(reason)` when this machine cannot run the fleet tests (no etcd);
/// CI installs it, so there this is always `None`.
pub fn unavailable() -> Option<String> {
    (!Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists())
        .then(|| format!("{ETCD} or {ETCDCTL} is not installed"))
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// What [`Etcd::start_secure`] turns on.
#[derive(Debug, Clone, Default)]
pub struct Secure {
    /// Client TLS with client certificates required.
    pub tls: bool,
    /// `root`'s password, and authentication enabled.
    pub root_password: Option<String>,
}

/// The PEM files of [`Secure::tls`], under the cluster's dir.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct Etcd {
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<TlsFiles>,
    root_password: Option<String>,
    dir: TestDir,
}

/// A CA and, signed by it, a server certificate for 127.0.0.1/localhost
/// and a client certificate, written under `dir` (`prefix-*.pem`).
pub fn write_certificates(dir: &Path, prefix: &str) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issue = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("signed certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = issue(vec!["switchyard".into()]);
    let file = |name: &str, text: &str| {
        let path = dir.join(format!("{prefix}-{name}.pem"));
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    TlsFiles {
        ca: file("ca", &ca.pem()),
        server_cert: file("server", &server_cert),
        server_key: file("server-key", &server_key),
        client_cert: file("client", &client_cert),
        client_key: file("client-key", &client_key),
    }
}

impl Etcd {
    /// Starts `n` members and waits until every one reports healthy.
    pub fn start(n: usize) -> Etcd {
        Etcd::start_secure(n, Secure::default())
    }

    /// [`Etcd::start`] with client TLS and/or authentication.
    pub fn start_secure(n: usize, secure: Secure) -> Etcd {
        let dir = TestDir::new("etcd");
        let tls = secure.tls.then(|| write_certificates(dir.path(), "etcd"));
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{}", i + 1);
                Member {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            initial_cluster,
            tls,
            root_password: None,
            dir,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy(Duration::from_secs(20));
        if let Some(password) = secure.root_password {
            for args in [
                vec!["user".to_string(), "add".into(), format!("root:{password}")],
                vec![
                    "user".into(),
                    "grant-role".into(),
                    "root".into(),
                    "root".into(),
                ],
                vec!["auth".into(), "enable".into()],
            ] {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                assert!(etcd.ctl(&args).is_some(), "etcdctl {args:?} failed");
            }
            etcd.root_password = Some(password);
        }
        etcd
    }

    /// The certificates, with [`Secure::tls`].
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// etcdctl's flags for TLS and the user.
    fn security_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(t) = &self.tls {
            args.push(format!("--cacert={}", t.ca.display()));
            args.push(format!("--cert={}", t.client_cert.display()));
            args.push(format!("--key={}", t.client_key.display()));
        }
        if let Some(password) = &self.root_password {
            args.push(format!("--user=root:{password}"));
        }
        args
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let scheme = self.scheme();
        let mut tls_args = Vec::new();
        if let Some(t) = &self.tls {
            tls_args.push(format!("--cert-file={}", t.server_cert.display()));
            tls_args.push(format!("--key-file={}", t.server_key.display()));
            tls_args.push(format!("--trusted-ca-file={}", t.ca.display()));
            tls_args.push("--client-cert-auth".to_string());
        }
        let m = &mut self.members[i];
        let client = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log file");
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "switchyard-test"])
            .args(["--enable-v2=false"])
            .args(&tls_args)
            // Fast elections on loopback: a killed leader is replaced in
            // well under a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        m.child = Some(child);
    }

    /// `http://127.0.0.1:PORT` of every member, for `[cluster] etcd`.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = self.scheme();
        self.members
            .iter()
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The endpoints as a TOML array.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    fn running_endpoints(&self) -> Vec<String> {
        let scheme = self.scheme();
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Waits until every running member answers `endpoint health` (which
    /// needs a quorum), or panics with the members' logs after `within`.
    pub fn wait_healthy(&self, within: Duration) {
        let endpoints = self.running_endpoints().join(",");
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = Command::new(ETCDCTL)
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoints, "--command-timeout=1s"])
                .args(self.security_args())
                .args(["endpoint", "health"])
                .output()
                .expect("run etcdctl");
            if out.status.success() {
                return;
            }
            last = String::from_utf8_lossy(&out.stderr).to_string();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "etcd not healthy within {within:?}: {last}\n{}",
            self.logs()
        );
    }

    /// SIGKILLs member `i` (0-based); its data stays for a restart.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts member `i` again on its ports and data dir (it rejoins).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Starts every stopped member again and waits until healthy.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_healthy(Duration::from_secs(20));
    }

    /// `etcdctl get KEY --print-value-only` against the running members.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.ctl(&["get", key, "--print-value-only"])?;
        let value = out.trim_end_matches('\n');
        (!value.is_empty()).then(|| value.to_string())
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.ctl(&["get", prefix, "--prefix", "--keys-only"])
            .map(|out| {
                out.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs etcdctl with `args`; its stdout when it succeeds.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let endpoints = self.running_endpoints().join(",");
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints, "--command-timeout=2s"])
            .args(self.security_args())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The members' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            all.push_str(&format!("--- {} ---\n", m.name));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}
