//! The mirror service: drains the request threads' rings of copies, hands
//! each copy to one of a fixed set of workers, and each worker sends it to
//! a backend of the mirror pool in force (the routing table's weighted pick
//! of a usable backend: health and drains apply), reads and discards the
//! answer, and counts its class and latency in the mirror's statistics.
//!
//! At most [`WORKERS`] copies are on their way at once, and at most
//! [`HANDOFF`] wait for a worker; while they are all taken the rings are
//! not drained, so they fill up and the request path drops (and counts)
//! new copies instead of queueing more: a slow mirror pool costs copies,
//! never client latency.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, Mutex};

use super::send::{send, Conns, Sent};
use super::tap;
use crate::routing::fast_random;
use crate::shared::Shared;
use crate::stats::{Instant, StatusClass};

/// Copies sent at the same time, at most.
pub const WORKERS: usize = 64;
/// Copies drained from the rings and waiting for a worker, at most.
const HANDOFF: usize = 64;
/// The drain's pace while copies come in, and when none have for a while.
const BUSY_TICK: Duration = Duration::from_millis(1);
const IDLE_TICK: Duration = Duration::from_millis(20);

pub struct MirrorService {
    shared: Arc<Shared>,
}

impl MirrorService {
    pub fn new(shared: Arc<Shared>) -> MirrorService {
        MirrorService { shared }
    }
}

#[async_trait]
impl BackgroundService for MirrorService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (handoff, copies) = mpsc::channel::<Bytes>(HANDOFF);
        let copies = Arc::new(Mutex::new(copies));
        for _ in 0..WORKERS {
            let (shared, copies) = (Arc::clone(&self.shared), Arc::clone(&copies));
            tokio::spawn(async move { work(&shared, &copies).await });
        }
        let mut drained = Vec::new();
        let mut tick = BUSY_TICK;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            drained.clear();
            if tap::drain(&mut drained) == 0 {
                tick = (tick * 2).min(IDLE_TICK);
                continue;
            }
            tick = BUSY_TICK;
            // Waits while every worker is busy: the rings fill meanwhile.
            for copy in tap::copies(Bytes::from(std::mem::take(&mut drained))) {
                if handoff.send(copy).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One worker: takes the next copy and sends it, until the service stops.
async fn work(shared: &Shared, copies: &Mutex<mpsc::Receiver<Bytes>>) {
    let mut conns = Conns::default();
    let mut buf = Vec::with_capacity(32 * 1024);
    loop {
        let Some(copy) = copies.lock().await.recv().await else {
            return;
        };
        // The mirror in force when the copy goes out; none: dropped (a
        // reload turned mirroring off).
        let table = shared.table_arc();
        let Some(route) = table.mirror.as_ref() else {
            continue;
        };
        let Some(pool) = table.pools.get(route.pool) else {
            continue;
        };
        let guard = &table.config.guard;
        let started = Instant::now();
        let Some(backend) = pool
            .pick_backend(fast_random(), None)
            .and_then(|i| pool.backends.get(i))
        else {
            // What a client of the pool would get: no answer.
            route.stats.record(StatusClass::Error, started, guard);
            continue;
        };
        let server = &table.config.server;
        match send(&mut conns, backend.addr, &copy, server, &mut buf).await {
            Sent::Answered(status) => {
                route
                    .stats
                    .record(StatusClass::from_status(status), started, guard);
            }
            Sent::Failed(kind) => {
                route
                    .stats
                    .copies
                    .record_failure(crate::stats::now_ms(), kind);
                route.stats.record(StatusClass::Error, started, guard);
            }
        }
        if buf.capacity() > 256 * 1024 {
            buf = Vec::with_capacity(32 * 1024);
        }
    }
}
