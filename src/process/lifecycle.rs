//! One process's life after start: readiness, the signals that end it, the
//! drain on shutdown, the hand-over to a successor in a binary upgrade, and
//! the systemd notifications that go with each step.
//!
//! - SIGTERM: `/ready` turns 503 at once, pingora stops accepting and closes
//!   idle keep-alive connections, in-flight requests finish, and the process
//!   exits 0 as soon as none is left (at the latest when `grace_period` ends).
//! - SIGQUIT: pingora's graceful upgrade. The runtime state is frozen first,
//!   then the listening sockets go to the new process waiting in
//!   `switchyard run -u`, which reads the state file only after receiving
//!   them. This process then drains like on SIGTERM.
//! - SIGUSR2: the same upgrade, started by this process: it checks the config
//!   with the binary now at its own path, starts `switchyard run -u` from it,
//!   waits until that one listens for the sockets, then hands over. Under
//!   systemd the successor reports itself as the new main PID.
//! - SIGINT: fast shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::clock::Now;
use crate::control::state::write_atomically;
use crate::control::Controller;
use crate::shared::Shared;
use crate::stats::REQUESTS;

/// Marks the process ready once it listens on every proxy address, and on
/// shutdown: not ready, then exit as soon as in-flight requests are done.
pub struct Lifecycle {
    pub shared: Arc<Shared>,
    /// Every proxy listen address, plain and TLS.
    pub listeners: Vec<SocketAddr>,
}

/// How often the drain looks at the in-flight count, and how many looks in
/// a row must find none before the process exits.
const DRAIN_POLL: Duration = Duration::from_millis(50);
const DRAIN_QUIET_POLLS: u32 = 3;

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let probe_all = async {
            wait_until_listening(&self.listeners).await;
            self.shared.set_ready();
            sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
            log::info!("switchyard ready (pid {})", std::process::id());
        };
        tokio::select! {
            _ = probe_all => {}
            _ = shutdown.changed() => {}
        }
        if !*shutdown.borrow() {
            let _ = shutdown.changed().await;
        }
        self.shared.begin_shutdown();
        log::info!(
            "shutting down: not ready, listeners closed, {} request(s) in flight",
            REQUESTS.in_flight()
        );
        drain_then_exit(&self.shared).await;
    }
}

/// Exits 0 once no request has been in flight and no webhook delivery has
/// been pending for a few polls in a row: events of the last changes (a
/// rollback just before a deploy's SIGTERM) still reach their receivers.
/// pingora itself ends the process when the grace period is over, so a
/// request that never finishes or a receiver that never answers can't keep
/// it alive longer than that.
async fn drain_then_exit(shared: &Shared) {
    let began = std::time::Instant::now();
    let mut quiet = 0;
    let mut said_webhooks = false;
    loop {
        tokio::time::sleep(DRAIN_POLL).await;
        let webhooks = shared.webhooks_pending.load(Ordering::Relaxed);
        if REQUESTS.in_flight() == 0 && webhooks == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        if webhooks > 0 && !said_webhooks {
            said_webhooks = true;
            log::info!("waiting for {webhooks} webhook delivery(ies) before exiting");
        }
        if quiet >= DRAIN_QUIET_POLLS {
            log::info!(
                "drained in {} ms: every in-flight request finished, every webhook event delivered or given up; exiting",
                began.elapsed().as_millis()
            );
            crate::access_log::writer::flush();
            std::process::exit(0);
        }
    }
}

/// Waits until this process holds a listening socket on every address.
/// pingora binds them in the background and keeps retrying while another
/// process has the port, so this polls procfs (see [`super::listening`])
/// and names the missing addresses once it has waited a while.
async fn wait_until_listening(addrs: &[SocketAddr]) {
    const POLL: Duration = Duration::from_millis(20);
    const WARN_AFTER: Duration = Duration::from_secs(5);
    let began = std::time::Instant::now();
    let mut warned = false;
    loop {
        let missing: Vec<SocketAddr> = match super::listening::own_listening_addrs() {
            Ok(own) => addrs.iter().filter(|a| !own.contains(a)).copied().collect(),
            Err(e) => {
                // Without procfs there is no way to tell; fall back to
                // trusting pingora's bind rather than never becoming ready.
                log::warn!("cannot read this process's sockets from /proc ({e}); marking ready");
                return;
            }
        };
        if missing.is_empty() {
            return;
        }
        if !warned && began.elapsed() > WARN_AFTER {
            warned = true;
            log::warn!(
                "not ready: not yet listening on {missing:?} (another process holds the port?); /ready stays 503"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The signals that end this process, given to pingora in place of its own
/// watcher so that the runtime state is frozen before sockets are handed over.
pub struct Signals {
    pub controller: Arc<Controller>,
    pub successor: Successor,
}

impl Signals {
    fn hand_over(&self) -> ShutdownSignal {
        let now = Now::read();
        self.controller.hand_over(now);
        let shared = self.controller.shared();
        let dir = &shared.table().config.admin.state_dir;
        let verdicts = crate::health::carry::snapshot(&shared.table(), now.mono);
        if let Err(e) = write_atomically(&crate::health::carry::path(dir), verdicts.as_bytes()) {
            log::warn!("health verdicts not handed over ({e}): the new process checks afresh");
        }
        self.controller.shared().begin_handover();
        log::info!("binary upgrade: runtime state frozen; handing listeners to the new process");
        ShutdownSignal::GracefulUpgrade
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined2()),
        ) else {
            log::error!("cannot install signal handlers; SIGTERM/SIGQUIT/SIGUSR2 won't work");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => {
                    self.controller.stopping(Now::read());
                    self.controller.shared().begin_shutdown();
                    sd_notify("STOPPING=1");
                    log::info!("SIGTERM: draining, then exiting");
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = quit.recv() => return self.hand_over(),
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = usr2.recv() => {
                    let successor = self.successor.clone();
                    match tokio::task::spawn_blocking(move || successor.start()).await {
                        Ok(Ok(pid)) => {
                            log::info!("binary upgrade: successor pid {pid} is waiting for the listeners");
                            return self.hand_over();
                        }
                        Ok(Err(e)) => log::error!("binary upgrade not started, still serving: {e}"),
                        Err(e) => log::error!("binary upgrade not started, still serving: {e}"),
                    }
                }
            }
        }
    }
}

/// How to start this process's successor: the binary now at the path this
/// one was started from (where a package upgrade puts the new version),
/// with the same config file.
#[derive(Debug, Clone)]
pub struct Successor {
    pub exe: PathBuf,
    pub config: PathBuf,
    pub upgrade_sock: PathBuf,
}

/// Bounds of each step of starting a successor.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

impl Successor {
    /// Checks the config with the new binary, starts it with `-u` and waits
    /// until it listens on the upgrade socket. Any failure leaves this
    /// process serving as before.
    pub fn start(&self) -> Result<u32, String> {
        let check = Command::new(&self.exe)
            .arg("check")
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        if !wait_for_exit(check, CHECK_TIMEOUT)? {
            return Err(format!(
                "`{} check -c {}` failed: fix the config (its errors are in the log above)",
                self.exe.display(),
                self.config.display()
            ));
        }
        // The successor binds this path once it is ready for the sockets; a
        // leftover from an earlier upgrade must not be mistaken for it.
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut child = Command::new(&self.exe)
            .arg("run")
            .arg("-u")
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let deadline = std::time::Instant::now() + LISTEN_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if is_socket(&self.upgrade_sock) {
                return Ok(child.id());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the new process exited early ({status})"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("the new process did not get ready for the hand-over in time".into())
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Waits (bounded) for a child; true if it exited successfully.
fn wait_for_exit(mut child: std::process::Child, limit: Duration) -> Result<bool, String> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.success()),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("config check did not finish within {limit:?}"))
}

/// Tells systemd (`Type=notify`) about a state change; a no-op outside it.
pub fn sd_notify(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket address.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        log::warn!("systemd notification \"{state}\" not sent: {e}");
    }
}
