//! `switchyard demo`: two built-in origins ("blue" and "green") and the proxy
//! on loopback, with an embedded config and light traffic of its own, so a
//! newcomer sees traffic switch — and switch back by itself — within a
//! minute of cloning the repository.
//!
//! The demo process is a supervisor: it runs the origins and the traffic in
//! its own runtime and the proxy as a child (`switchyard run`, the binary it
//! is itself), so the proxy lives and dies exactly as in production while
//! the demo keeps control of its temp dir, which it removes on every way
//! out (scenario end, Ctrl-C, SIGTERM, the proxy dying).
//!
//! - [`proxy`]: the child process, its readiness and its stop;
//! - [`traffic`]: the paced load through the proxy, and a small HTTP client;
//! - [`story`]: what the demo says, line by line, and the two scenarios.

mod proxy;
mod story;
mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::origin::{Origin, DEMO_COMMANDS};
use proxy::ProxyChild;
use traffic::Traffic;

/// What `switchyard demo --scenario …` plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A canary of green; green starts failing at 50 %, the guard rolls back.
    CanaryRollback,
    /// A healthy canary of green, step by step to 100 %.
    CanarySuccess,
}

/// The demo's command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub admin_http: SocketAddr,
    /// Requests per second of the demo's own traffic; `None`: no traffic.
    pub rate: Option<u32>,
    pub scenario: Option<Scenario>,
}

/// The highest `--rate`: light traffic, for a laptop.
pub const MAX_RATE: u32 = 500;

/// The demo's config; `{…}` placeholders are filled in at start.
const DEMO_CONFIG: &str = r#"# Written by `switchyard demo`; edit it and switchyard reloads it.
[server]
listen = ["{listen}"]
threads = 2
pool_header = "x-switchyard-pool"
grace_period = "1s"

[admin]
socket = "{dir}/admin.sock"
http = "{admin_http}"
state_dir = "{dir}/state"

[pools.blue]
backends = ["{blue}"]

[pools.green]
backends = ["{green}"]

[split]
blue = 100
green = 0

[sticky]
key = "cookie:session"

[[route]]
header = "x-canary"
equals = "true"
pool = "green"

[health]
interval = "1s"
timeout = "500ms"
rise = 1

[guard]
window = "10s"
min_requests = 20
max_error_rate = 5.0
max_p95 = "500ms"
watch = "5m"

[canary]
steps = [ { weight = 10, hold = "{hold}" }, { weight = 50, hold = "{hold}" }, { weight = 100 } ]
"#;

/// A step's hold: long enough to try commands by hand, short in a scenario.
const HOLD_INTERACTIVE: &str = "20s";
const HOLD_SCENARIO: &str = "3s";

/// How long the proxy may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn run(options: Options) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("demo runtime: {e}"))?;
    runtime.block_on(demo(options))
}

/// The temp dir of one demo run, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<TempDir, String> {
        let path = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("state"))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the demo was started with, for the banner and the scenarios.
pub(crate) struct Setup {
    pub listen: SocketAddr,
    pub admin_http: SocketAddr,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub blue: SocketAddr,
    pub green: SocketAddr,
    /// This binary's path, as a shell word.
    pub exe: String,
    /// `switchyard ctl -s SOCKET`, with the path of this binary.
    pub ctl: String,
    pub rate: Option<u32>,
}

async fn demo(options: Options) -> Result<(), String> {
    // Signals are ours from the start: Ctrl-C while starting cleans up too.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let stopped = async {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    };
    tokio::pin!(stopped);

    let dir = TempDir::create()?;
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let origin = |name: &'static str| async move {
        let origin = Origin::start(any, name)
            .await
            .map_err(|e| format!("demo origin {name}: {e}"))?;
        origin.control().accept_commands();
        Ok::<_, String>(origin)
    };
    let blue = origin("blue").await?;
    let green = origin("green").await?;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let socket = dir.path().join("admin.sock");
    let config = dir.path().join("switchyard.toml");
    let hold = match options.scenario {
        Some(_) => HOLD_SCENARIO,
        None => HOLD_INTERACTIVE,
    };
    let config_text = DEMO_CONFIG
        .replace("{listen}", &options.listen.to_string())
        .replace("{admin_http}", &options.admin_http.to_string())
        .replace("{dir}", &dir.path().to_string_lossy())
        .replace("{blue}", &blue.addr().to_string())
        .replace("{green}", &green.addr().to_string())
        .replace("{hold}", hold);
    std::fs::write(&config, config_text)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let setup = Setup {
        listen: options.listen,
        admin_http: options.admin_http,
        exe: shell_word(&exe),
        ctl: format!("{} ctl -s {}", shell_word(&exe), shell_word(&socket)),
        socket,
        config,
        blue: blue.addr(),
        green: green.addr(),
        rate: options.rate,
    };

    // The demo narrates what the log would say: the proxy logs only what
    // goes wrong (warnings; errors only in a scenario) unless RUST_LOG says.
    let log_filter = options.scenario.map(|_| "error").unwrap_or("warn");
    let mut child = ProxyChild::spawn(&exe, &setup.config, log_filter)?;
    let outcome = tokio::select! {
        outcome = async {
            proxy::wait_ready(setup.admin_http, READY_TIMEOUT).await?;
            let traffic = setup.rate.map(|rate| Traffic::start(setup.listen, rate));
            let outcome = match options.scenario {
                None => {
                    print_banner(&setup);
                    story::follow(&setup, traffic.as_ref()).await
                }
                Some(scenario) => story::play(scenario, &setup, traffic.as_ref()).await,
            };
            drop(traffic);
            outcome
        } => outcome,
        status = child.exited() => Err(format!("the proxy exited ({status})")),
        signal = &mut stopped => {
            story::say(format_args!("{signal}: stopping the proxy and removing {}", dir.path().display()));
            Ok(())
        }
    };
    child.stop().await;
    drop((blue, green));
    drop(dir);
    outcome
}

/// A path as one shell word (quoted only when it must be).
fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn print_banner(setup: &Setup) {
    let Setup {
        listen,
        admin_http,
        blue,
        green,
        ctl,
        exe,
        ..
    } = setup;
    let traffic = match setup.rate {
        Some(rate) => {
            format!("{rate} requests/s of its own through the proxy (--no-traffic: none)")
        }
        None => "none (--no-traffic); send your own with curl".to_string(),
    };
    let commands = DEMO_COMMANDS.replace('\n', "\n    ");
    println!(
        r#"
switchyard demo
  proxy        http://{listen}/          (blue says "blue", green says "green")
  admin        http://{admin_http}/status   /metrics   /ready
  traffic      {traffic}
  origins      blue http://{blue}/   green http://{green}/
  config       {config}  (edit it: switchyard reloads it)

Try, in another terminal:
  curl -s http://{listen}/                          # -> blue
  curl -s -H 'x-canary: true' http://{listen}/      # route rule -> green
  {ctl} split blue=90 green=10
  for i in $(seq 20); do curl -s http://{listen}/; done | sort | uniq -c
  {ctl} cutover green
  {ctl} rollback trying it out
  {ctl} canary start green        # 10 % -> 50 % -> 100 %, 20 s holds
  {ctl} status
  {ctl} history

Make green misbehave (on its own port, not through the proxy) and watch the
guard roll it back:
  curl -X POST 'http://{green}/_demo/fail?percent=20'
  curl -X POST 'http://{green}/_demo/latency?ms=800'
  curl -X POST 'http://{green}/_demo/heal'
  Every command of an origin (blue's too):
    {commands}

Or let the demo tell the story:
  {exe} demo --scenario canary-rollback
  {exe} demo --scenario canary-success

What happens is printed below (the proxy's own log: RUST_LOG=info).
Ctrl-C stops everything and removes the temp dir.
"#,
        config = setup.config.display(),
    );
}
