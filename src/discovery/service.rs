//! The discovery background service: resolves every `dns` backend of the
//! config in force on its own schedule and hands changed answers to the
//! controller, which publishes them as a new backend set in one swap.
//!
//! Each name is looked up again after `refresh`, or after its answer's TTL
//! when that is shorter (but never sooner than `min_ttl`); a failed lookup
//! is retried after `min_ttl` and keeps the set in force. Lookups of one
//! round run concurrently; a round waits for its slowest lookup, which the
//! section's `timeout` bounds. The request path never waits for any of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use super::resolve::{Answer, LookupError, Resolver};
use crate::clock::WallMs;
use crate::config::{DiscoveryConfig, DnsBackend};
use crate::control::Controller;
use crate::health::service::first_check;
use crate::health::verdict::BackendHealth;
use crate::routing::{DnsKey, RoutingTable};

/// How often the service looks for names that are due.
const TICK: Duration = Duration::from_millis(100);

pub struct DiscoveryService {
    controller: Arc<Controller>,
}

impl DiscoveryService {
    pub fn new(controller: Arc<Controller>) -> Self {
        DiscoveryService { controller }
    }

    /// One lookup's outcome for `key`: publish a changed set, record the
    /// lookup, log what is news. Returns when to look the name up again.
    async fn settle(
        &self,
        table: &Arc<RoutingTable>,
        key: &DnsKey,
        backend: &DnsBackend,
        section: &DiscoveryConfig,
        result: Result<Answer, LookupError>,
    ) -> Duration {
        let Some(pool) = table.pool(&key.0) else {
            return section.refresh;
        };
        let Some(entry) = pool.dns.iter().find(|d| d.name == key.1) else {
            return section.refresh;
        };
        let allow_empty = backend.allow_empty.unwrap_or(section.allow_empty);
        let (addrs, ttl) = match result {
            Ok(answer) => (sockets(&answer, backend.port), answer.ttl),
            Err(e) if allow_empty && e.is_empty_answer() => (Vec::new(), section.refresh),
            Err(e) => {
                if entry
                    .lookups
                    .failed(WallMs::read(), e.kind(), e.to_string())
                {
                    log::warn!(
                        "discovery: pool {} backend {{ dns = \"{}\" }}: lookup failed ({e}); keeping its {} address(es) [{}]",
                        key.0,
                        key.1,
                        entry.addrs.len(),
                        list(&entry.addrs)
                    );
                }
                return section.min_ttl;
            }
        };
        let first = entry.lookups.record().resolved_at.is_none();
        let mut changed = false;
        if first || addrs != entry.addrs {
            let warm = self.warm_start(table, key, &addrs).await;
            if let Some(old) = self.controller.put_discovered(key, addrs.clone(), warm) {
                changed = !first;
                log_change(key, &old, &addrs, first);
            }
        }
        if let Some(outage) = entry.lookups.succeeded(WallMs::read(), changed) {
            log::info!(
                "discovery: pool {} backend {{ dns = \"{}\" }} resolves again (failing for {} ms)",
                key.0,
                key.1,
                outage.as_millis()
            );
        }
        ttl.max(section.min_ttl).min(section.refresh)
    }

    /// Checks each address the pool does not hold yet once, concurrently,
    /// so that a set replaced whole (a blue/green behind one name) has
    /// checked addresses from the swap on instead of none until the health
    /// service's next round. Without active checks a new address is up at
    /// once anyway.
    async fn warm_start(
        &self,
        table: &Arc<RoutingTable>,
        key: &DnsKey,
        addrs: &[SocketAddr],
    ) -> Vec<(SocketAddr, Arc<BackendHealth>)> {
        let Some(pool) = table.pool(&key.0) else {
            return Vec::new();
        };
        if !table.config.health.enabled {
            return Vec::new();
        }
        let server_name = pool.config.server_name_of(&key.1);
        let new: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| !pool.backends.iter().any(|b| b.addr == **a))
            .copied()
            .collect();
        let checks = new.iter().map(|addr| {
            let (table, pool_name, server_name, addr) =
                (Arc::clone(table), key.0.clone(), server_name.clone(), *addr);
            async move {
                let pool = table.pool(&pool_name)?;
                Some(first_check(pool, &table.config.health, addr, server_name).await)
            }
        });
        let verdicts = join_all(checks).await;
        new.into_iter()
            .zip(verdicts)
            .filter_map(|(addr, health)| Some((addr, health.flatten()?)))
            .collect()
    }
}

/// Runs the futures concurrently (each its own task) and returns their
/// outputs in order; a task that panicked leaves `None` in its place.
async fn join_all<T, F>(futures: impl Iterator<Item = F>) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut outputs = Vec::new();
    for (i, future) in futures.enumerate() {
        outputs.push(None);
        set.spawn(async move { (i, future.await) });
    }
    while let Some(joined) = set.join_next().await {
        if let Ok((i, output)) = joined {
            outputs[i] = Some(output);
        }
    }
    outputs
}

/// The answer's addresses on the backend's port, sorted.
fn sockets(answer: &Answer, port: u16) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = answer
        .addrs
        .iter()
        .map(|ip| SocketAddr::new(*ip, port))
        .collect();
    addrs.sort();
    addrs
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn log_change(key: &DnsKey, old: &[SocketAddr], new: &[SocketAddr], first: bool) {
    if first {
        log::info!(
            "discovery: pool {} backend {{ dns = \"{}\" }} resolved to [{}]",
            key.0,
            key.1,
            list(new)
        );
        return;
    }
    let added: Vec<SocketAddr> = new.iter().filter(|a| !old.contains(a)).copied().collect();
    let removed: Vec<SocketAddr> = old.iter().filter(|a| !new.contains(a)).copied().collect();
    log::info!(
        "discovery: pool {} backend {{ dns = \"{}\" }} changed: [{}] -> [{}] (added [{}], removed [{}], removed ones drain)",
        key.0,
        key.1,
        list(old),
        list(new),
        list(&added),
        list(&removed)
    );
}

/// Every `dns` backend of the config in force, by key.
fn entries(table: &RoutingTable) -> Vec<(DnsKey, DnsBackend)> {
    table
        .config
        .pools
        .iter()
        .flat_map(|(pool, p)| {
            p.dns
                .iter()
                .map(move |d| ((pool.clone(), d.name.clone()), d.clone()))
        })
        .collect()
}

/// What the loop keeps between ticks.
#[derive(Default)]
struct Schedule {
    resolver: Option<Result<Arc<Resolver>, LookupError>>,
    section: Option<DiscoveryConfig>,
    /// When each name is due for its next lookup; absent = now.
    due: BTreeMap<DnsKey, Instant>,
}

impl DiscoveryService {
    /// One tick: looks up every name that is due and settles the answers.
    async fn step(&self, schedule: &mut Schedule) {
        let table = self.controller.shared().table_arc();
        let all = entries(&table);
        schedule
            .due
            .retain(|key, _| all.iter().any(|(k, _)| k == key));
        if all.is_empty() {
            self.controller.shared().set_discovery_ready();
            return;
        }
        // A reload that changes `[discovery]` gets a new resolver, and
        // every name is looked up with it at once.
        let section = table.config.discovery.clone();
        if schedule.section.as_ref() != Some(&section) {
            schedule.resolver = Some(Resolver::new(&section).map(Arc::new));
            schedule.section = Some(section.clone());
            schedule.due.clear();
        }
        let Some(resolver) = schedule.resolver.as_ref() else {
            return;
        };
        let now = Instant::now();
        let round: Vec<&(DnsKey, DnsBackend)> = all
            .iter()
            .filter(|(key, _)| schedule.due.get(key).is_none_or(|at| *at <= now))
            .collect();
        if round.is_empty() {
            return;
        }
        let lookups = round.iter().map(|(_, backend)| {
            let (resolver, host) = (resolver.clone(), backend.host.clone());
            async move { resolver?.lookup(&host).await }
        });
        let results = join_all(lookups).await;
        for ((key, backend), result) in round.into_iter().zip(results) {
            let result =
                result.unwrap_or_else(|| Err(LookupError::Setup("the lookup task failed".into())));
            let again = self.settle(&table, key, backend, &section, result).await;
            schedule.due.insert(key.clone(), Instant::now() + again);
        }
        // `/ready` waits for the first round: every name answered or failed.
        self.controller.shared().set_discovery_ready();
    }
}

/// Warm start for `dns` backends: one lookup of every name, and one check
/// of each address found, before the listeners accept, so that a start-up
/// request finds the names' addresses (run before the health service's own
/// first round). Bounded by the lookup `timeout` plus the health `timeout`.
/// A name that does not resolve now leaves its pool without its addresses;
/// the service keeps trying.
pub fn first_round(controller: &Arc<Controller>) {
    if entries(&controller.shared().table_arc()).is_empty() {
        controller.shared().set_discovery_ready();
        return;
    }
    let started = std::time::Instant::now();
    let service = DiscoveryService::new(Arc::clone(controller));
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(service.step(&mut Schedule::default())),
        Err(e) => log::warn!("first dns lookups not run ({e}); the service does them"),
    }
    log::info!(
        "first dns lookups done in {} ms, before accepting requests",
        started.elapsed().as_millis()
    );
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Its own resolver on this runtime: the first round's lived on a
        // runtime that is gone. Names are looked up again at once (the
        // sets are the same, so nothing is published).
        let mut schedule = Schedule::default();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            self.step(&mut schedule).await;
        }
    }
}
