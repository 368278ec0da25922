//! `switchyard demo`: two built-in origins ("blue" and "green") and the proxy
//! on loopback, with an embedded config, so a newcomer sees traffic switch
//! within a minute of cloning the repository.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::origin::Origin;

/// The demo's config; `{…}` placeholders are filled in at start.
const DEMO_CONFIG: &str = r#"# Written by `switchyard demo`; edit it and switchyard reloads it.
[server]
listen = ["{listen}"]
threads = 2
pool_header = "x-switchyard-pool"

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

[guard]
window = "10s"
min_requests = 20
max_error_rate = 5.0
max_p95 = "500ms"
watch = "5m"

[canary]
steps = [ { weight = 10, hold = "20s" }, { weight = 50, hold = "20s" }, { weight = 100 } ]
"#;

pub fn run(listen: SocketAddr, admin_http: SocketAddr) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("state"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    let (blue, green) = start_origins()?;
    let config_text = DEMO_CONFIG
        .replace("{listen}", &listen.to_string())
        .replace("{admin_http}", &admin_http.to_string())
        .replace("{dir}", &dir.to_string_lossy())
        .replace("{blue}", &blue.to_string())
        .replace("{green}", &green.to_string());
    let config_path: PathBuf = dir.join("switchyard.toml");
    std::fs::write(&config_path, config_text)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

    let socket = dir.join("admin.sock");
    let ctl = format!("cargo run --release -- ctl -s {}", socket.display());
    println!(
        r#"
switchyard demo
  proxy        http://{listen}/          (blue says "blue", green says "green")
  admin        http://{admin_http}/status   /metrics   /ready
  origins      blue {blue}   green {green}
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

Ctrl-C stops everything.
"#,
        config = config_path.display(),
    );
    crate::process::server::run(&config_path, false)
}

/// Starts blue and green on free loopback ports in a thread of their own
/// (pingora owns the main thread) and returns their addresses.
fn start_origins() -> Result<(SocketAddr, SocketAddr), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("demo-origins".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("demo origins: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let any: SocketAddr = ([127, 0, 0, 1], 0).into();
                let started = async {
                    let blue = Origin::start(any, "blue").await?;
                    let green = Origin::start(any, "green").await?;
                    Ok::<_, std::io::Error>((blue, green))
                };
                match started.await {
                    Ok((blue, green)) => {
                        let _ = tx.send(Ok((blue.addr(), green.addr())));
                        // Serve for as long as the process lives.
                        std::future::pending::<()>().await;
                        drop((blue, green));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("demo origins: {e}")));
                    }
                }
            });
        })
        .map_err(|e| format!("demo origins: {e}"))?;
    rx.recv()
        .map_err(|_| "demo origins did not start".to_string())?
}
