//! The process's log: env_logger (`RUST_LOG`, default `info`) behind a
//! filter for the lines that a peer, not the operator, decides to make us
//! write.
//!
//! Every rustls warning is about something the other side sent (an IP
//! address or a malformed name as SNI, a warning alert, an unexpected
//! message), so a client could have one WARN line written per handshake: a
//! single testssl run wrote 10 000. And pingora writes one ERROR line per
//! TLS connection that fails its handshake (`Downstream handshake error
//! from …`), which anyone who can connect can repeat. So:
//!
//! - rustls's warnings are demoted to debug (`RUST_LOG=info,rustls=debug`
//!   shows them);
//! - pingora's per-connection accept and handshake lines are rate-limited
//!   per call site: the first [`BURST`] in each [`WINDOW`] are written, the
//!   rest counted, and the next line written after them says how many were
//!   suppressed.
//!
//! Everything else passes through untouched. Nothing on the request path
//! logs, so the lock here is taken only for those rate-limited lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};
use parking_lot::Mutex;

/// Lines written per call site and window before the rest are counted.
pub const BURST: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Installs the process logger: env_logger behind [`PeerNoise`].
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(PeerNoise::new(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Is this record's level to be lowered to debug (rustls's warnings)?
fn demoted(metadata: &Metadata) -> bool {
    metadata.level() == Level::Warn && in_crate(metadata.target(), "rustls")
}

/// Is this a line pingora writes once per accepted connection?
fn per_connection(metadata: &Metadata) -> bool {
    metadata.level() <= Level::Warn && metadata.target() == "pingora_core::services::listening"
}

fn in_crate(target: &str, krate: &str) -> bool {
    target
        .strip_prefix(krate)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// A call site's allowance in the current window.
struct Budget {
    since: Instant,
    written: u32,
    suppressed: u64,
}

/// Call sites are told apart by file and line (`file!()` is static).
type Site = (&'static str, u32);

/// Per call site: may a line be written at `now`? `None`: suppress it.
/// `Some(n)`: write it, after saying that `n` were suppressed before it.
#[derive(Default)]
pub struct Limiter {
    sites: HashMap<Site, Budget>,
}

impl Limiter {
    pub fn admit(&mut self, site: Site, now: Instant) -> Option<u64> {
        let budget = self.sites.entry(site).or_insert(Budget {
            since: now,
            written: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(budget.since) >= WINDOW {
            budget.since = now;
            budget.written = 0;
        }
        if budget.written < BURST {
            budget.written += 1;
            Some(std::mem::take(&mut budget.suppressed))
        } else {
            budget.suppressed += 1;
            None
        }
    }
}

/// A logger that demotes or rate-limits the peer-triggered lines (see the
/// module doc) before handing every record to `inner`.
pub struct PeerNoise<L> {
    inner: L,
    limiter: Mutex<Limiter>,
}

impl<L: Log> PeerNoise<L> {
    pub fn new(inner: L) -> Self {
        PeerNoise {
            inner,
            limiter: Mutex::new(Limiter::default()),
        }
    }
}

impl<L: Log> Log for PeerNoise<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        if demoted(metadata) {
            let debug = Metadata::builder()
                .level(Level::Debug)
                .target(metadata.target())
                .build();
            return self.inner.enabled(&debug);
        }
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if demoted(record.metadata()) {
            let debug = Record::builder()
                .args(*record.args())
                .level(Level::Debug)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            if self.inner.enabled(debug.metadata()) {
                self.inner.log(&debug);
            }
            return;
        }
        if per_connection(record.metadata()) && self.inner.enabled(record.metadata()) {
            if let (Some(file), Some(line)) = (record.file_static(), record.line()) {
                let admitted = self.limiter.lock().admit((file, line), Instant::now());
                match admitted {
                    None => return,
                    Some(0) => {}
                    Some(suppressed) => self.inner.log(
                        &Record::builder()
                            .args(format_args!(
                                "{suppressed} similar messages suppressed (at most {BURST} per {}s are logged)",
                                WINDOW.as_secs()
                            ))
                            .level(record.level())
                            .target(record.target())
                            .build(),
                    ),
                }
            }
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the lines it is given, at or above `level`.
    struct Capture {
        level: Level,
        lines: Mutex<Vec<String>>,
    }

    impl Log for Capture {
        fn enabled(&self, metadata: &Metadata) -> bool {
            metadata.level() <= self.level
        }
        fn log(&self, record: &Record) {
            if self.enabled(record.metadata()) {
                let line = format!("{} {}: {}", record.level(), record.target(), record.args());
                self.lines.lock().push(line);
            }
        }
        fn flush(&self) {}
    }

    fn logger(level: Level) -> PeerNoise<Capture> {
        PeerNoise::new(Capture {
            level,
            lines: Mutex::new(Vec::new()),
        })
    }

    fn emit(logger: &impl Log, level: Level, target: &str, line: u32, text: &str) {
        logger.log(
            &Record::builder()
                .args(format_args!("{text}"))
                .level(level)
                .target(target)
                .file_static(Some("src/services/listening.rs"))
                .line(Some(line))
                .build(),
        );
    }

    #[test]
    fn rustls_warnings_are_debug_lines() {
        let info = logger(Level::Info);
        emit(
            &info,
            Level::Warn,
            "rustls::msgs::handshake",
            1,
            "Illegal SNI",
        );
        emit(&info, Level::Warn, "rustlsish", 1, "not rustls");
        emit(&info, Level::Error, "rustls::conn", 1, "an error stays");
        assert_eq!(
            *info.inner.lines.lock(),
            [
                "WARN rustlsish: not rustls",
                "ERROR rustls::conn: an error stays"
            ]
        );
        let debug = logger(Level::Debug);
        emit(
            &debug,
            Level::Warn,
            "rustls::msgs::handshake",
            1,
            "Illegal SNI",
        );
        assert_eq!(
            *debug.inner.lines.lock(),
            ["DEBUG rustls::msgs::handshake: Illegal SNI"]
        );
    }

    #[test]
    fn per_connection_lines_are_rate_limited_per_call_site() {
        let info = logger(Level::Info);
        let target = "pingora_core::services::listening";
        for _ in 0..1000 {
            emit(
                &info,
                Level::Error,
                target,
                241,
                "Downstream handshake error",
            );
        }
        emit(
            &info,
            Level::Error,
            target,
            249,
            "Downstream handshake timeout",
        );
        // Other targets are never limited.
        for _ in 0..10 {
            emit(&info, Level::Error, "switchyard::control", 1, "ours");
        }
        let lines = info.inner.lines.lock();
        let handshake = lines.iter().filter(|l| l.contains("error")).count();
        assert_eq!(handshake, BURST as usize);
        assert_eq!(lines.iter().filter(|l| l.contains("timeout")).count(), 1);
        assert_eq!(lines.iter().filter(|l| l.contains("ours")).count(), 10);
    }

    #[test]
    fn a_new_window_says_how_many_were_suppressed() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        let site = ("listening.rs", 241);
        let admitted = (0..100)
            .filter(|_| limiter.admit(site, start).is_some())
            .count();
        assert_eq!(admitted, BURST as usize);
        assert_eq!(
            limiter.admit(site, start + WINDOW),
            Some(100 - u64::from(BURST))
        );
        assert_eq!(limiter.admit(site, start + WINDOW), Some(0));
    }
}
