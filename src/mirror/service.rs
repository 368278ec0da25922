//! The mirror service: drains the request threads' rings of copies in
//! batches, hands each batch to one of a fixed set of workers, and each
//! worker sends its batch, pipelined on one connection, to a backend of the
//! mirror pool in force (the routing table's weighted pick of a usable
//! backend, one per batch: health and drains apply), reads and discards
//! the answers, and counts their classes and latencies in the mirror's
//! statistics (one update of the error-rate test per batch).
//!
//! At most [`WORKERS`] batches of at most [`MAX_COPIES`] copies (and
//! [`MAX_BYTES`]) are on their way at once, one more waits for a worker;
//! while they are all taken the rings are not drained, so they fill up and
//! the request path drops (and counts) new copies instead of queueing
//! more: a slow mirror pool costs copies, never client latency.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, Mutex};

use super::queue::Batch;
use super::send::{send_batch, Conns, Outcome};
use super::tap;
use crate::routing::fast_random;
use crate::shared::Shared;
use crate::stats::Instant;

/// Batches sent at the same time (mirror connections in use), at most.
pub const WORKERS: usize = 8;
/// Copies in one batch, at most.
pub const MAX_COPIES: usize = 64;
/// A batch's bytes, at most (its first copy always goes in): within what
/// a loopback socket buffers, so the write of a batch does not wait for the
/// origin to read while its answers wait for us to read.
pub const MAX_BYTES: usize = 64 * 1024;
/// The drain's pace while copies come in, and when none have for a while.
const BUSY_TICK: Duration = Duration::from_millis(1);
const IDLE_TICK: Duration = Duration::from_millis(20);
/// Batches taken from one ring per tick, at most (a 2 MiB ring holds fewer
/// than 2 MiB / 8 B copies; with 64 a batch, 4096 batches empty it).
const MAX_BATCHES_PER_RING: usize = 4096;

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
        let (handoff, batches) = mpsc::channel::<Batch>(1);
        let batches = Arc::new(Mutex::new(batches));
        for _ in 0..WORKERS {
            let (shared, batches) = (Arc::clone(&self.shared), Arc::clone(&batches));
            tokio::spawn(async move { work(&shared, &batches).await });
        }
        let mut tick = BUSY_TICK;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let mut took = 0;
            for ring in tap::rings() {
                for _ in 0..MAX_BATCHES_PER_RING {
                    if ring.is_empty() {
                        break;
                    }
                    let mut batch = Batch::default();
                    let moved = ring.drain_into(&mut batch, MAX_COPIES, MAX_BYTES);
                    took += moved;
                    if moved == 0 {
                        break;
                    }
                    // Waits while every worker is busy: the rings fill
                    // meanwhile.
                    if handoff.send(batch).await.is_err() {
                        return;
                    }
                }
            }
            tick = if took == 0 {
                (tick * 2).min(IDLE_TICK)
            } else {
                BUSY_TICK
            };
        }
    }
}

/// One worker: takes the next batch and sends it, until the service stops.
async fn work(shared: &Shared, batches: &Mutex<mpsc::Receiver<Batch>>) {
    let mut conns = Conns::default();
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut outcomes = Vec::with_capacity(MAX_COPIES);
    loop {
        let Some(batch) = batches.lock().await.recv().await else {
            return;
        };
        // The mirror in force when the batch goes out; none: dropped (a
        // reload turned mirroring off).
        let table = shared.table_arc();
        let Some(route) = table.mirror.as_ref() else {
            continue;
        };
        let Some(pool) = table.pools.get(route.pool) else {
            continue;
        };
        let started = Instant::now();
        outcomes.clear();
        match pool
            .pick_backend(fast_random(), None)
            .and_then(|i| pool.backends.get(i))
        {
            // What a client of the pool would get: no answer.
            None => outcomes.resize(batch.len(), Outcome::NoBackend),
            Some(backend) => {
                let server = &table.config.server;
                send_batch(&mut conns, backend.addr, &batch, server, &mut buf, &mut outcomes)
                    .await
            }
        }
        route
            .stats
            .record_batch(&outcomes, started, &table.config.guard);
        if buf.capacity() > 256 * 1024 {
            buf = Vec::with_capacity(32 * 1024);
        }
    }
}
