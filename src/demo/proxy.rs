//! The demo's proxy: `switchyard run -c <temp dir>/switchyard.toml` as a
//! child process of the demo, started from the binary the demo runs from.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::traffic;

/// How long a stopped proxy may take to drain before it is killed (the demo
/// config's grace period is 1 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ProxyChild {
    child: Child,
}

impl ProxyChild {
    /// Starts the proxy; its log goes to the demo's stderr at `log_filter`
    /// unless `RUST_LOG` says otherwise.
    pub fn spawn(exe: &Path, config: &Path, log_filter: &str) -> Result<ProxyChild, String> {
        let mut command = Command::new(exe);
        command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            // If the demo dies without stopping it, the proxy goes too.
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", log_filter);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {} run: {e}", exe.display()))?;
        Ok(ProxyChild { child })
    }

    /// Resolves when the proxy exits by itself.
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => describe(status),
            Err(e) => e.to_string(),
        }
    }

    /// SIGTERM (switchyard drains, then exits), SIGKILL if it takes longer
    /// than [`STOP_TIMEOUT`]; returns once the process is gone.
    pub async fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // std has no kill(2) with a signal of choice and this crate has no
        // unsafe code: kill(1) sends it. Without kill(1), SIGKILL at once.
        let terminated = match self.child.id() {
            Some(pid) => std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => false,
        };
        if terminated
            && tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// Waits until `GET /ready` on the admin address answers 200 (every backend
/// checked), or fails when `limit` passes. (The demo watches for the proxy
/// exiting beside this.)
pub async fn wait_ready(admin: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(reply) = traffic::request(admin, "GET", "/ready").await {
            if reply.status == 200 {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the proxy was not ready within {} s (http://{admin}/ready)",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
