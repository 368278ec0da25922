//! A real etcd cluster for the fleet tests: 1 or 3 members (`/usr/bin/etcd`,
//! etcd 3.4) on free loopback ports, each with its data dir under one
//! [`TestDir`]. Start waits until the cluster answers (bounded); members can
//! be killed (SIGKILL), stopped all at once and started again on the same
//! ports and data, so a test sees the same cluster come back.

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

pub struct Etcd {
    members: Vec<Member>,
    initial_cluster: String,
    dir: TestDir,
}

impl Etcd {
    /// Starts `n` members and waits until every one reports healthy.
    pub fn start(n: usize) -> Etcd {
        let dir = TestDir::new("etcd");
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
            dir,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_healthy(Duration::from_secs(20));
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
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
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
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
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
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
