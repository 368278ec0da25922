//! Assembles one switchyard process: loads the config, builds the first
//! routing table, wires the pingora server with the proxy service and the
//! background services, and runs until shutdown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::admin::http::AdminHttp;
use crate::admin::socket::AdminSocket;
use crate::config::{self, Config};
use crate::control::Controller;
use crate::guard::evaluator::GuardService;
use crate::health::HealthService;
use crate::notify::WebhookService;
use crate::proxy::SwitchyardProxy;
use crate::reload::ReloadService;
use crate::shared::Shared;

/// Runs the proxy in the foreground until SIGTERM/SIGINT. Returns an error
/// message (config invalid, port busy) instead of starting a broken server.
pub fn run(config_path: &Path, upgrade: bool) -> Result<(), String> {
    crate::reload::survive_early_hangup();
    let config = config::load(config_path).map_err(|errors| {
        format!(
            "{}: invalid configuration:\n{errors}",
            config_path.display()
        )
    })?;
    let config = Arc::new(config);
    // Start (and calibrate) the request-path clock before any request.
    let _ = crate::stats::now_ms();
    let (controller, webhook_events) = Controller::start(config_path, (*config).clone())?;
    let shared = Arc::clone(controller.shared());

    let admin_listener = match config.admin.http {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| format!("admin.http: cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };

    let mut server = Server::new_with_opt_and_conf(
        Opt {
            upgrade,
            daemon: false,
            nocapture: false,
            test: false,
            conf: None,
        },
        server_conf(&config),
    );
    server.bootstrap();

    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        SwitchyardProxy::new(Arc::clone(&shared)),
        "switchyard proxy",
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);

    if let Some(listener) = admin_listener {
        server.add_service(background_service(
            "admin http",
            AdminHttp::new(Arc::clone(&shared), listener),
        ));
    }
    server.add_service(background_service(
        "admin socket",
        AdminSocket::new(Arc::clone(&controller), config.admin.socket.clone()),
    ));
    server.add_service(background_service(
        "config reload",
        ReloadService::new(Arc::clone(&controller)),
    ));
    server.add_service(background_service(
        "guard",
        GuardService::new(Arc::clone(&controller)),
    ));
    server.add_service(background_service(
        "webhooks",
        WebhookService::new(Arc::clone(&shared), webhook_events),
    ));
    server.add_service(background_service(
        "health checks",
        HealthService::new(Arc::clone(&shared)),
    ));
    server.add_service(background_service(
        "lifecycle",
        Lifecycle {
            shared: Arc::clone(&shared),
            listeners: config.server.listen.clone(),
        },
    ));

    if !config.server.tls.is_empty() {
        // The section is validated today so files written now stay valid;
        // serving it is not built yet. Say so loudly rather than silently.
        log::error!(
            "[[server.tls]] is configured but TLS termination is not implemented yet: \
             {} TLS listener(s) will NOT be opened",
            config.server.tls.len()
        );
    }
    log::info!(
        "switchyard starting: listeners {:?}, revision {}",
        config.server.listen,
        shared.table.load().revision
    );
    server.run(RunArgs::default());
    Ok(())
}

fn server_conf(config: &Config) -> ServerConf {
    let state_dir = &config.admin.state_dir;
    ServerConf {
        threads: config.server.threads,
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool,
        // pingora waits 300 s by default before the final shutdown step; an
        // operator expects the configured grace period instead.
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: state_dir
            .join("upgrade.sock")
            .to_string_lossy()
            .into_owned(),
        pid_file: state_dir
            .join("switchyard.pid")
            .to_string_lossy()
            .into_owned(),
        ..ServerConf::default()
    }
}

/// Marks the process ready once every listener accepts connections, and not
/// ready again as soon as shutdown begins.
struct Lifecycle {
    shared: Arc<Shared>,
    listeners: Vec<SocketAddr>,
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let probe_all = async {
            for addr in &self.listeners {
                wait_until_accepting(*addr).await;
            }
            self.shared.set_ready();
            log::info!("switchyard ready");
        };
        tokio::select! {
            _ = probe_all => {}
            _ = shutdown.changed() => {}
        }
        if !*shutdown.borrow() {
            let _ = shutdown.changed().await;
        }
        self.shared.begin_shutdown();
        log::info!("shutting down: not ready, draining in-flight requests");
    }
}

/// Polls a listener until a TCP connect succeeds (bounded: 60 s).
async fn wait_until_accepting(addr: SocketAddr) {
    let target = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    };
    for _ in 0..3000 {
        if tokio::net::TcpStream::connect(target).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log::warn!("listener {addr} did not accept connections within 60 s");
}
