//! The health background service: rounds of active checks over the table
//! in force, and the end of ejections whose time is up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::probe::{probe, ProbeTarget};
use crate::clock::MonoMs;
use crate::config::{HealthConfig, UpstreamProtocol};
use crate::health::verdict::BackendHealth;
use crate::routing::Pool;
use crate::shared::Shared;

/// Runs the active checks over the table in force and ends ejections whose
/// time is up. The first round is [`first_round`], run before the process
/// accepts a request.
pub struct HealthService {
    shared: Arc<Shared>,
}

/// Warm start: one round of checks before the listeners accept, so that no
/// request is answered 503 because its pool's backends are not checked yet.
/// Every probe has the health `timeout`, so this delays the start by at
/// most that. A successor in a binary upgrade (`upgrade`) first takes over
/// its predecessor's verdicts ([`super::carry`]), then runs the round too,
/// before it accepts on the listeners it was handed; the old process
/// serves meanwhile. Marks the health ready (`/ready`, the guard) either way.
pub fn first_round(shared: &Arc<Shared>, upgrade: bool) {
    let table = shared.table_arc();
    let state_dir = &table.config.admin.state_dir;
    if upgrade {
        let taken = super::carry::take_over(&table, state_dir, MonoMs::read());
        log::info!("took over the health verdicts of {taken} backend(s) from the old process");
    } else {
        super::carry::discard(state_dir);
    }
    if table.config.health.enabled {
        let started = std::time::Instant::now();
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(HealthService::new(Arc::clone(shared)).check_all()),
            Err(e) => log::warn!("first health round not run ({e}); backends start unchecked"),
        }
        log::info!(
            "first health round done in {} ms, before accepting requests",
            started.elapsed().as_millis()
        );
    }
    shared.set_health_ready();
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
                    server_name: backend.server_name.clone(),
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
        let now = MonoMs::read();
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

/// The first check of `addr`, an address about to join `pool` (DNS
/// discovery's warm start), done as a round of the service would do it.
/// The verdict starts unknown and takes this one result, so a pass puts it
/// up at once and a failure leaves it to the service's next rounds.
pub async fn first_check(
    pool: &Pool,
    config: &HealthConfig,
    addr: std::net::SocketAddr,
    server_name: String,
) -> Arc<BackendHealth> {
    let health = Arc::new(BackendHealth::new(true));
    let target = ProbeTarget {
        addr,
        server_name,
        tls: pool.config.upstream.tls.then(|| pool.probe_tls.clone()),
        h2: pool.config.upstream.protocol == UpstreamProtocol::Http2,
    };
    let passed = probe(target, &config.path, config.timeout).await;
    health.check_result(passed, config);
    health
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The first round ran before the listeners opened.
        let interval = self.shared.table().config.health.interval;
        let mut next_round = tokio::time::Instant::now() + interval;
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
