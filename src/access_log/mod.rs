//! The access log (SPEC §10): one line per request, written off the
//! request path.
//!
//! A finished request is formatted on its own thread into a fixed line
//! buffer and appended to that thread's [`ring::Ring`] — a few relaxed
//! atomic stores: no lock, no syscall, no allocation (the line buffer and
//! the ring are made once per thread). A writer thread ([`writer`]) drains
//! every thread's ring every few milliseconds and writes the lines to the
//! file. When a ring is full the line is dropped and counted
//! (`access_log_dropped_total`): a slow disk delays the log, never traffic.
//!
//! - [`format`]: the JSON and combined lines
//! - [`capture`]: what the fast path keeps of a request for its line, and
//!   the `x-request-id` sent upstream
//! - [`ring`]: a thread's queue of lines
//! - [`writer`]: the writer thread, reopening (SIGUSR1, `ctl reopen-logs`),
//!   the flush at exit
//!
//! The log is set up once per process from `[access_log]` (a reload cannot
//! change it: a restart-only setting).

pub mod capture;
pub mod format;
/// Also the mirror's queue of copies (`crate::mirror::tap`).
pub(crate) mod ring;
pub mod writer;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use parking_lot::Mutex;

pub use capture::Capture;
pub use format::Entry;
use format::Line;
use ring::Ring;

use crate::config::{AccessLogConfig, AccessLogFormat};

/// Each request thread's queue: at ~300 bytes a line, about 3 000 lines,
/// far more than a thread finishes between two drains.
const RING_BYTES: usize = 1 << 20;

/// The process's access log, once started.
static SINK: OnceLock<Sink> = OnceLock::new();

struct Sink {
    format: AccessLogFormat,
    /// Lines kept per 10 000 requests.
    sample: u16,
    errors_only: bool,
    /// Every thread's ring; locked when a thread logs its first line and
    /// by the writer, never per request.
    rings: Mutex<Vec<Arc<Ring>>>,
    dropped: AtomicU64,
    output: Mutex<writer::Output>,
}

thread_local! {
    /// This thread's line buffer and ring (made at its first line).
    static THREAD: RefCell<Option<(Line, Arc<Ring>)>> = const { RefCell::new(None) };
}

/// Is there an access log? One atomic load.
#[inline]
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Lines dropped because a writer fell behind (or the file failed).
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Opens the log and starts its writer thread. `Ok` without a config (no
/// log); an error if the file cannot be opened or a log already runs.
pub fn start(config: Option<&AccessLogConfig>) -> Result<(), writer::StartError> {
    let Some(config) = config else {
        return Ok(());
    };
    let output = writer::Output::open(&config.path)?;
    let sink = Sink {
        format: config.format,
        sample: config.sample.units(),
        errors_only: config.errors_only,
        rings: Mutex::new(Vec::new()),
        dropped: AtomicU64::new(0),
        output: Mutex::new(output),
    };
    SINK.set(sink)
        .map_err(|_| writer::StartError::AlreadyStarted)?;
    writer::spawn()
}

/// Writes one finished request's line, if the log is on and keeps it.
pub fn record(entry: &Entry) {
    let Some(sink) = SINK.get() else {
        return;
    };
    if sink.errors_only && !entry.is_error() {
        return;
    }
    if sink.sample < 10_000 && crate::routing::fast_random() % 10_000 >= u64::from(sink.sample) {
        return;
    }
    let queued = THREAD.with(|thread| {
        let Ok(mut thread) = thread.try_borrow_mut() else {
            return false;
        };
        let (line, ring) = thread.get_or_insert_with(|| {
            let ring = Arc::new(Ring::new(RING_BYTES));
            sink.rings.lock().push(Arc::clone(&ring));
            (Line::default(), ring)
        });
        format::write(line, sink.format, entry, SystemTime::now());
        line.get().is_some_and(|bytes| ring.push(bytes))
    });
    if !queued {
        sink.dropped.fetch_add(1, Ordering::Relaxed);
    }
}
