//! Upstream health: active checks, passive ejection, and the per-backend
//! verdict the request path reads.
//!
//! Each backend has one [`BackendHealth`], shared across routing-table
//! rebuilds while the backend (pool + address) stays in the config, so a
//! reload never forgets what the checks learned. The request path reads one
//! atomic flag (`serving`); everything that changes it — check results,
//! ejections and their expiry — happens off that path, except the moment a
//! passive ejection trips.
//!
//! States: a new backend is *unknown* and takes no traffic until it passes
//! one check; a *down* backend needs `rise` passes in a row to come back; an
//! *up* backend goes down after `fall` failures in a row. Independently, a
//! backend with `eject_consecutive_failures` upstream failures or 5xx
//! answers in a row is ejected for `eject_base_time`, doubling on repeated
//! ejections up to `eject_max_time`, never more than `eject_max_percent` of
//! a pool at once (with one backend, never).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{HealthConfig, UpstreamProtocol};
use crate::routing::Pool;
use crate::shared::Shared;
use crate::stats::now_ms;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

#[derive(Debug)]
pub struct BackendHealth {
    /// What the request path reads: up by checks and not ejected.
    serving: AtomicBool,
    state: AtomicU8,
    passes: AtomicU32,
    fails: AtomicU32,
    /// Passive: upstream failures or 5xx in a row.
    consecutive_errors: AtomicU32,
    /// 0 = not ejected; else `now_ms` when the ejection ends.
    ejected_until: AtomicU64,
    /// How many times it was ejected (doubles the next ejection).
    ejections: AtomicU32,
    last_ejected_at: AtomicU64,
}

impl BackendHealth {
    /// `checked`: active checks are on, so the backend starts unknown (not
    /// serving); otherwise it starts up.
    pub fn new(checked: bool) -> Self {
        BackendHealth {
            serving: AtomicBool::new(!checked),
            state: AtomicU8::new(if checked { UNKNOWN } else { UP }),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            consecutive_errors: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            last_ejected_at: AtomicU64::new(0),
        }
    }

    /// May this backend take new requests (checks pass, not ejected)?
    #[inline]
    pub fn is_up(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn state_label(&self) -> &'static str {
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            return "ejected";
        }
        match self.state.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "unknown",
        }
    }

    /// Has this backend failed its checks (down) or been ejected? A backend
    /// not checked yet (unknown) has not failed.
    pub fn has_failed(&self) -> bool {
        self.is_ejected() || self.state.load(Ordering::Relaxed) == DOWN
    }

    fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    fn refresh_serving(&self) {
        let serving = self.state.load(Ordering::Relaxed) == UP && !self.is_ejected();
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// One active check result. Returns true if the state changed.
    pub fn check_result(&self, passed: bool, config: &HealthConfig) -> bool {
        let before = self.state.load(Ordering::Relaxed);
        if passed {
            self.fails.store(0, Ordering::Relaxed);
            let passes = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
            let needed = if before == UNKNOWN { 1 } else { config.rise };
            if before != UP && passes >= needed {
                self.state.store(UP, Ordering::Relaxed);
            }
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
            if before != DOWN && fails >= config.fall {
                self.state.store(DOWN, Ordering::Relaxed);
            }
        }
        self.refresh_serving();
        before != self.state.load(Ordering::Relaxed)
    }

    /// Ends an ejection whose time is up. Returns true if it ended.
    fn expire_ejection(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 && now >= until {
            self.ejected_until.store(0, Ordering::Relaxed);
            self.consecutive_errors.store(0, Ordering::Relaxed);
            self.refresh_serving();
            return true;
        }
        false
    }

    /// A request to this backend succeeded (anything but a failure or 5xx).
    /// Writes only when there is a streak to reset, so healthy traffic
    /// does not bounce this cache line between workers.
    #[inline]
    pub fn observe_success(&self) {
        if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
            self.consecutive_errors.store(0, Ordering::Relaxed);
        }
    }

    /// A request to this backend failed upstream or answered 5xx. Ejects it
    /// when the streak reaches the threshold and the pool's cap allows.
    pub fn observe_failure(&self, pool: &Pool, config: &HealthConfig) {
        let streak = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if config.eject_consecutive_failures == 0
            || streak < config.eject_consecutive_failures
            || self.is_ejected()
        {
            return;
        }
        let cap = pool.backends.len() * config.eject_max_percent as usize / 100;
        let ejected = pool
            .backends
            .iter()
            .filter(|b| b.health.is_ejected())
            .count();
        if ejected >= cap {
            return;
        }
        let now = now_ms();
        // Repeated ejections double, unless the last one was long ago.
        let last = self.last_ejected_at.load(Ordering::Relaxed);
        let max_ms = u64::try_from(config.eject_max_time.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) > max_ms.saturating_mul(2) {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let base_ms = u64::try_from(config.eject_base_time.as_millis()).unwrap_or(u64::MAX);
        let duration = base_ms.saturating_mul(1u64 << n).min(max_ms);
        self.last_ejected_at.store(now, Ordering::Relaxed);
        self.ejected_until
            .store(now.saturating_add(duration).max(1), Ordering::Relaxed);
        self.refresh_serving();
        log::warn!(
            "backend ejected for {} ms after {streak} failures in a row (pool {})",
            duration,
            pool.name
        );
    }
}

/// Runs the active checks over the table in force and ends ejections whose
/// time is up. The first round runs at once; `/ready` waits for it.
pub struct HealthService {
    shared: Arc<Shared>,
}

impl HealthService {
    pub fn new(shared: Arc<Shared>) -> Self {
        HealthService { shared }
    }

    /// One round of checks over every backend of the current table.
    async fn check_all(&self) {
        let table = self.shared.table_arc();
        let config = &table.config.health;
        let mut checks = tokio::task::JoinSet::new();
        for (p, pool) in table.pools.iter().enumerate() {
            for (b, backend) in pool.backends.iter().enumerate() {
                let target = ProbeTarget {
                    addr: backend.addr,
                    server_name: pool.config.server_name(&pool.config.backends[b]),
                    tls: pool.config.upstream.tls.then(|| pool.probe_tls.clone()),
                    h2: pool.config.upstream.protocol == UpstreamProtocol::Http2,
                };
                let (path, timeout) = (config.path.clone(), config.timeout);
                checks.spawn(async move { (p, b, probe(target, &path, timeout).await) });
            }
        }
        while let Some(Ok((p, b, passed))) = checks.join_next().await {
            let (pool, backend) = (&table.pools[p], &table.pools[p].backends[b]);
            if backend.health.check_result(passed, config) {
                log::info!(
                    "backend {} of pool {} is now {}",
                    backend.name,
                    pool.name,
                    backend.health.state_label()
                );
            }
        }
    }

    fn expire_ejections(&self) {
        let table = self.shared.table();
        let now = now_ms();
        for pool in &table.pools {
            for backend in &pool.backends {
                if backend.health.expire_ejection(now) {
                    log::info!(
                        "backend {} of pool {} is back from ejection",
                        backend.name,
                        pool.name
                    );
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let enabled = self.shared.table().config.health.enabled;
        if enabled {
            self.check_all().await;
        }
        self.shared.set_health_ready();
        let mut next_round = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            self.expire_ejections();
            // The interval is re-read every time so a reload applies at once.
            let config = self.shared.table().config.health.clone();
            if config.enabled && tokio::time::Instant::now() >= next_round {
                next_round = tokio::time::Instant::now() + config.interval;
                self.check_all().await;
            }
        }
    }
}

/// One backend as its pool talks to it.
struct ProbeTarget {
    addr: std::net::SocketAddr,
    /// TLS server name and `Host`; empty for a backend given by IP.
    server_name: String,
    /// `Some` for a TLS pool: its client settings (`None` inside if they
    /// could not be built, which fails the probe rather than skip TLS).
    tls: Option<Option<Arc<pingora::tls::ClientConfig>>>,
    /// HTTP/2-only pool: probe with HTTP/2 (prior knowledge in clear).
    h2: bool,
}

/// GET `path` over a fresh connection, the way the pool's requests go (TLS,
/// HTTP/2); 2xx or 3xx within `timeout` passes.
async fn probe(target: ProbeTarget, path: &str, timeout: Duration) -> bool {
    let host = if target.server_name.is_empty() {
        target.addr.to_string()
    } else {
        target.server_name.clone()
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(target.addr).await.ok()?;
        match &target.tls {
            None => exchange(tcp, target.h2, &host, path).await,
            Some(config) => {
                let name = if target.server_name.is_empty() {
                    pingora::tls::ServerName::IpAddress(target.addr.ip().into())
                } else {
                    pingora::tls::ServerName::try_from(target.server_name.clone()).ok()?
                };
                let connector = pingora::tls::TlsConnector::from(Arc::clone(config.as_ref()?));
                let stream = connector.connect(name, tcp).await.ok()?;
                exchange(stream, target.h2, &host, path).await
            }
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

async fn exchange<S>(stream: S, h2: bool, host: &str, path: &str) -> Option<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let status = if h2 {
        h2_status(stream, host, path).await?
    } else {
        h1_status(stream, host, path).await?
    };
    Some((200..400).contains(&status))
}

async fn h1_status<S>(mut stream: S, host: &str, path: &str) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: switchyard-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let mut len = 0;
    // "HTTP/1.1 200" is 12 bytes; read until we have them.
    while len < 12 {
        let n = stream.read(&mut head[len..]).await.ok()?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = std::str::from_utf8(&head[..len]).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

async fn h2_status<S>(stream: S, host: &str, path: &str) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = h2::client::handshake(stream).await.ok()?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(format!("http://{host}{path}"))
        .header("user-agent", "switchyard-health")
        .body(())
        .ok()?;
    let status = async {
        let (response, _) = client.send_request(request, true).ok()?;
        Some(response.await.ok()?.status().as_u16())
    }
    .await;
    driver.abort();
    status
}
