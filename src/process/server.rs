//! Assembles one switchyard process: loads the config, builds the first
//! routing table, wires the pingora server with the proxy service and the
//! background services, and runs until shutdown.

use std::path::Path;
use std::sync::Arc;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use super::lifecycle::{Lifecycle, Signals, Successor};
use crate::admin::http::{AdminHttp, Listen};
use crate::admin::socket::AdminSocket;
use crate::config::{self, Config};
use crate::control::judge::GuardService;
use crate::control::Controller;
use crate::dataplane::accept::LeanKeepalive;
use crate::dataplane::pingora::SwitchyardProxy;
use crate::discovery::service::DiscoveryService;
use crate::health::service::HealthService;
use crate::notify::WebhookService;
use crate::reload::ReloadService;
use crate::tls::listeners::CertReloadService;

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
    // A second instance started by mistake with the same addresses stops
    // here, with one line, before it touches the state dir or the socket.
    if !upgrade {
        ensure_addresses_free(&config)?;
    }
    // Start (and calibrate) the request-path clock before any request.
    let _ = crate::stats::now_ms();
    // Certificates were checked by `config::load`; loading them again here
    // (files may have changed since) still reports instead of panicking.
    let tls_listeners =
        crate::tls::listeners::load_listeners(&config.server.tls).map_err(|e| e.to_string())?;

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
    // With `-u` this waits for the old process's listening sockets. The old
    // process froze its runtime state before sending them, so the state
    // file read next is final.
    server.bootstrap();
    let (controller, webhook_events) = Controller::start(config_path, (*config).clone())?;
    // Before the first request: the request path logs into it from then on.
    crate::access_log::start(config.access_log.as_ref()).map_err(|e| e.to_string())?;
    let shared = Arc::clone(controller.shared());
    // Warm start: listeners accept only once the `dns` backends were
    // looked up and the backends checked.
    crate::discovery::service::first_round(&controller);
    crate::health::service::first_round(&shared, upgrade);

    let admin_listener = match config.admin.http {
        Some(addr) if upgrade => Some(Listen::FromPredecessor(addr)),
        Some(addr) => Some(Listen::Bound(crate::admin::http::bind(addr).map_err(
            |e| {
                format!(
                    "admin.http: cannot listen on {addr}: {e}{}",
                    in_use_hint(&e)
                )
            },
        )?)),
        None => None,
    };

    let mut app = LeanKeepalive::new(
        http_proxy(
            &server.configuration,
            SwitchyardProxy::new(Arc::clone(&shared)),
        ),
        Arc::clone(&shared),
    );
    if let Some(proxy) = app.proxy_mut() {
        if config.server.h2c {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
        // HTTP/2's bound on a request head: the header list a client may
        // send (SETTINGS_MAX_HEADER_LIST_SIZE; h2 answers 431 past it).
        // Fixed here, so `max_request_head` is a restart-only setting.
        let mut h2 = default_h2_options();
        h2.max_header_list_size(
            config
                .server
                .max_request_head
                .try_into()
                .unwrap_or(u32::MAX),
        );
        proxy.h2_options = Some(h2);
    }
    let idle_reaper = app.idle_reaper();
    let mut proxy = Service::new("switchyard proxy".to_string(), app);
    for addr in &config.server.listen {
        // No L4 buffers: pingora's default read buffer is 64 KiB per
        // connection, zero-filled at accept (500 MB for 10 000 idle
        // clients), and even 1 KiB was most of an idle connection. The
        // fast path waits for readability and then reads a request
        // straight into its per-request buffer (one `recv`, no copy);
        // pingora's path reads heads into buffers of its own. No write
        // buffer either: the fast path writes whole heads and bodies and
        // flushes each, so a per-connection buffer (1460 B) only added a
        // copy. (A response on pingora's path goes out as head and body.)
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
        );
    }
    for listener in &tls_listeners {
        let mut settings = TlsSettings::intermediate("", "")
            .map_err(|e| format!("TLS listener {}: {e}", listener.addr))?;
        settings.set_cert_resolver(Arc::clone(&listener.resolver) as _);
        // HTTP/2 and HTTP/1.1, chosen by the client through ALPN.
        settings.enable_h2();
        // No L4 buffers under TLS: rustls reads records into its own
        // buffer (a read buffer under it, 16 KiB for a whole record, only
        // added a copy and was held by every idle connection), and writes
        // whole records (a write buffer only added a copy).
        proxy.add_listener(
            ListenerConfig::tcp(listener.addr.to_string())
                .tls(settings)
                .l4_buffer(L4BufferSettings::unbuffered()),
        );
    }
    server.add_service(proxy);
    server.add_service(background_service("upstream idle reaper", idle_reaper));

    if let Some(listener) = admin_listener {
        server.add_service(background_service(
            "admin http",
            AdminHttp::new(Arc::clone(&controller), listener, &config.admin.state_dir),
        ));
    }
    server.add_service(background_service(
        "admin socket",
        AdminSocket::new(Arc::clone(&controller), config.admin.socket.clone()),
    ));
    server.add_service(background_service(
        "access log reopen",
        crate::access_log::writer::ReopenOnSignal,
    ));
    server.add_service(background_service(
        "config reload",
        ReloadService::new(Arc::clone(&controller)),
    ));
    if let Some(cluster) = controller.cluster() {
        // One decision (SPEC §9): lease, member entry, election, the
        // leader's sums; the judge reads them through the controller.
        let decision = crate::cluster::election::Decision::new(Arc::clone(cluster));
        controller.attach_decision(Arc::clone(&decision));
        server.add_service(background_service(
            "cluster election",
            crate::cluster::election::ElectionService {
                shared: Arc::clone(&shared),
                decision,
            },
        ));
    }
    server.add_service(background_service(
        "guard",
        GuardService::new(Arc::clone(&controller)),
    ));
    server.add_service(background_service(
        "webhooks",
        WebhookService::new(Arc::clone(&shared), webhook_events),
    ));
    server.add_service(background_service(
        "dns discovery",
        DiscoveryService::new(Arc::clone(&controller)),
    ));
    server.add_service(background_service(
        "mirror",
        crate::mirror::service::MirrorService::new(Arc::clone(&shared)),
    ));
    server.add_service(background_service(
        "health checks",
        HealthService::new(Arc::clone(&shared)),
    ));
    if !tls_listeners.is_empty() {
        server.add_service(background_service(
            "certificate reload",
            CertReloadService::new(tls_listeners.clone()),
        ));
    }
    server.add_service(background_service(
        "lifecycle",
        Lifecycle {
            shared: Arc::clone(&shared),
            listeners: (config.server.listen.iter().copied())
                .chain(tls_listeners.iter().map(|l| l.addr))
                .collect(),
        },
    ));

    log::info!(
        "switchyard starting: listeners {:?}, TLS listeners {:?}, revision {}",
        config.server.listen,
        tls_listeners.iter().map(|l| l.addr).collect::<Vec<_>>(),
        shared.table().revision
    );
    let successor = Successor {
        // Resolved now: after a package upgrade this path holds the new binary.
        exe: std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?,
        config: std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf()),
        upgrade_sock: config.admin.state_dir.join("upgrade.sock"),
    };
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            controller,
            successor,
        }),
    });
    crate::access_log::writer::flush();
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

/// Binds (and releases) every proxy and admin HTTP address once, so that
/// one held by another process is a clear start-up error before anything
/// else starts. pingora would otherwise retry its bind for a while and then
/// abort the process.
fn ensure_addresses_free(config: &Config) -> Result<(), String> {
    let plain = config.server.listen.iter().map(|a| (*a, "server.listen"));
    let tls = config.server.tls.iter().map(|t| (t.listen, "server.tls"));
    let admin = config.admin.http.map(|a| (a, "admin.http"));
    for (addr, key) in plain.chain(tls).chain(admin) {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(format!(
                "{key}: cannot listen on {addr}: {e}{}",
                in_use_hint(&e)
            ));
        }
    }
    Ok(())
}

fn in_use_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        " (another process holds it: is another switchyard running with this config?)"
    } else {
        ""
    }
}
