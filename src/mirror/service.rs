//! The mirror service: drains the request threads' rings of copies in
//! batches, hands each batch to one of a fixed set of workers, and each
//! worker sends its batch, pipelined on one connection, to a backend of the
//! mirror pool in force (the routing table's weighted pick of a usable
//! backend, one per batch: health and drains apply), reads and discards
//! the answers, and counts their classes and latencies in the mirror's
//! statistics (one update of the error-rate test per batch).
//!
//! A drained batch is cut into pieces, one per worker: spread over one more
//! connection than are busy while the pool keeps up (few large writes),
//! over all of them when it is slow or not heard from yet (its answers
//! come one after another per connection). At most [`WORKERS`] pieces of at most [`MAX_COPIES`] copies
//! (and [`MAX_BYTES`]) are on their way at once, one more waits for a worker;
//! while they are all taken the rings are not drained, so they fill up and
//! the request path drops (and counts) new copies instead of queueing
//! more: a slow mirror pool costs copies, never client latency.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Pieces sent at the same time (mirror connections in use), at most. As
/// many as copies were in flight before pipelining: an origin that answers
/// a connection's pipelined requests one after another (most do) still
/// gets 64 at a time when it is slow.
pub const WORKERS: usize = 64;
/// Copies in one batch, at most.
pub const MAX_COPIES: usize = 64;
/// A batch's bytes, at most (its first copy always goes in): within what
/// a loopback socket buffers, so the write of a batch does not wait for the
/// origin to read while its answers wait for us to read.
pub const MAX_BYTES: usize = 64 * 1024;
/// The drain's pace while copies come in, and when none have for a while.
const BUSY_TICK: Duration = Duration::from_millis(1);
const IDLE_TICK: Duration = Duration::from_millis(20);
/// One drain takes at most this many pieces' worth of copies and bytes
/// (what waits for a worker, next to what the rings hold).
const DRAIN_PIECES: usize = 8;
/// An answer time per copy (µs, the last piece's) above which the pool is
/// taken as slow: its copies are spread over every connection.
const SLOW_US: u64 = 1_000;
/// Drains per tick, at most (a 2 MiB ring holds fewer than 2 MiB / 8 B
/// copies, 512 to a drain).
const MAX_DRAINS: usize = 1024;

pub struct MirrorService {
    shared: Arc<Shared>,
}

impl MirrorService {
    pub fn new(shared: Arc<Shared>) -> MirrorService {
        MirrorService { shared }
    }
}

/// How the workers fare: how many hold a piece, and the last piece's
/// answer time per copy.
struct Pace {
    busy: AtomicUsize,
    per_copy_us: AtomicU64,
}

/// A worker's share of a drained batch: copies `range` of it.
type Piece = (Arc<Batch>, Range<usize>);

#[async_trait]
impl BackgroundService for MirrorService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (handoff, pieces) = mpsc::channel::<Piece>(1);
        let pieces = Arc::new(Mutex::new(pieces));
        let pace = Arc::new(Pace {
            busy: AtomicUsize::new(0),
            // Unknown until a piece is answered: slow, so that a first
            // burst is spread.
            per_copy_us: AtomicU64::new(u64::MAX),
        });
        for _ in 0..WORKERS {
            let (shared, pieces, pace) = (
                Arc::clone(&self.shared),
                Arc::clone(&pieces),
                Arc::clone(&pace),
            );
            tokio::spawn(async move { work(&shared, &pieces, &pace).await });
        }
        let mut tick = BUSY_TICK;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let mut took = 0;
            let rings = tap::rings();
            for _ in 0..MAX_DRAINS {
                let mut batch = Batch::default();
                for ring in &rings {
                    let room = DRAIN_PIECES * MAX_COPIES - batch.len();
                    if room > 0 && !ring.is_empty() {
                        ring.drain_into(&mut batch, room, DRAIN_PIECES * MAX_BYTES);
                    }
                }
                if batch.is_empty() {
                    break;
                }
                took += batch.len();
                // Left in the rings: drained again at once.
                let full = batch.len() == DRAIN_PIECES * MAX_COPIES
                    || batch.bytes.len() >= DRAIN_PIECES * MAX_BYTES - MAX_BYTES;
                // Waits while every worker is busy: the rings fill
                // meanwhile.
                let busy = if pace.per_copy_us.load(Ordering::Relaxed) > SLOW_US {
                    WORKERS
                } else {
                    pace.busy.load(Ordering::Relaxed)
                };
                for piece in pieces_of(Arc::new(batch), busy) {
                    if handoff.send(piece).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
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

/// Cuts a drained batch into the workers' pieces: spread over one more
/// connection than are busy now, so an origin that keeps up gets the batch
/// in one piece and a slow one (whose answers come one after another on
/// each connection) gets it spread over every connection; no piece has
/// more than [`MAX_COPIES`] copies or (past its first) [`MAX_BYTES`].
fn pieces_of(batch: Arc<Batch>, busy: usize) -> Vec<Piece> {
    let ways = (busy + 1).min(WORKERS);
    let per = batch.len().div_ceil(ways).clamp(1, MAX_COPIES);
    let mut pieces = Vec::with_capacity(ways);
    let mut start = 0;
    while start < batch.len() {
        let mut end = start + 1;
        while end < batch.len()
            && end - start < per
            && batch.start(end + 1) - batch.start(start) <= MAX_BYTES
        {
            end += 1;
        }
        pieces.push((Arc::clone(&batch), start..end));
        start = end;
    }
    pieces
}

/// One worker: takes the next piece and sends it, until the service stops.
async fn work(shared: &Shared, pieces: &Mutex<mpsc::Receiver<Piece>>, pace: &Pace) {
    let mut conns = Conns::default();
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut outcomes = Vec::with_capacity(MAX_COPIES);
    loop {
        let Some((batch, copies)) = pieces.lock().await.recv().await else {
            return;
        };
        pace.busy.fetch_add(1, Ordering::Relaxed);
        let (started, n) = (Instant::now(), copies.len().max(1) as u64);
        send_piece(
            shared,
            &mut conns,
            (batch.as_ref(), copies),
            &mut buf,
            &mut outcomes,
        )
        .await;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        pace.per_copy_us.store(took / n, Ordering::Relaxed);
        pace.busy.fetch_sub(1, Ordering::Relaxed);
        if buf.capacity() > 256 * 1024 {
            buf = Vec::with_capacity(32 * 1024);
        }
    }
}

async fn send_piece(
    shared: &Shared,
    conns: &mut Conns,
    (batch, copies): (&Batch, Range<usize>),
    buf: &mut Vec<u8>,
    outcomes: &mut Vec<Outcome>,
) {
    // The mirror in force when the copies go out; none: dropped (a reload
    // turned mirroring off).
    let table = shared.table_arc();
    let Some(route) = table.mirror.as_ref() else {
        return;
    };
    let Some(pool) = table.pools.get(route.pool) else {
        return;
    };
    let started = Instant::now();
    outcomes.clear();
    match pool
        .pick_backend(fast_random(), None)
        .and_then(|i| pool.backends.get(i))
    {
        // What a client of the pool would get: no answer.
        None => outcomes.resize(copies.len(), Outcome::NoBackend),
        Some(backend) => {
            let server = &table.config.server;
            send_batch(conns, backend.addr, (batch, copies), server, buf, outcomes).await
        }
    }
    route
        .stats
        .record_batch(outcomes, started, &table.config.guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sizes: &[usize]) -> Arc<Batch> {
        let mut batch = Batch::default();
        for size in sizes {
            batch.push(&vec![b'x'; *size]);
        }
        Arc::new(batch)
    }

    fn ranges(pieces: &[Piece]) -> Vec<Range<usize>> {
        pieces.iter().map(|(_, r)| r.clone()).collect()
    }

    #[test]
    fn a_batch_is_one_piece_while_no_worker_is_busy_and_spread_when_some_are() {
        let thirty = batch(&[100; 30]);
        let whole = ranges(&pieces_of(Arc::clone(&thirty), 0));
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..30));
        assert_eq!(ranges(&pieces_of(Arc::clone(&thirty), 1)), [0..15, 15..30]);
        let spread = ranges(&pieces_of(Arc::clone(&thirty), 7));
        assert_eq!(spread.len(), 8);
        assert!(spread.iter().all(|r| r.len() <= 4), "{spread:?}");
        // One copy a connection at most, once 30 or more are busy.
        assert_eq!(ranges(&pieces_of(thirty, 100)).len(), 30);
    }

    #[test]
    fn pieces_keep_to_the_copy_and_byte_limits() {
        let many = batch(&[10; 200]);
        let pieces = ranges(&pieces_of(many, 0));
        assert_eq!(pieces, [0..64, 64..128, 128..192, 192..200]);
        // 8 KiB copies: 8 to a piece; a copy past the limit goes alone.
        let big = batch(&[8 * 1024, 8 * 1024, 8 * 1024, 70 * 1024, 8 * 1024]);
        assert_eq!(ranges(&pieces_of(big, 0)), [0..3, 3..4, 4..5]);
        let large = batch(&[8 * 1024; 20]);
        assert_eq!(ranges(&pieces_of(large, 0)), [0..8, 8..16, 16..20]);
    }
}
