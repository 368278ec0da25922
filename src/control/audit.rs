//! The audit log: one JSON line per applied change in `state_dir/audit.log`
//! (time, revision, command, origin, uid, reason, the split after). Append
//! only; `history` and `undo` read it back. Also who asked for a change
//! ([`ChangeOrigin`]), which every record names.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::clock::WallMs;
pub use crate::protocol::answer::AuditRecord;

/// Who asked for a change (for the audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// The admin socket, with the peer's uid when the kernel told us.
    Admin { uid: Option<u32> },
    /// The config file changed (watcher) or `reload` re-read it.
    File,
    /// SIGHUP.
    Signal,
    /// Reconciling the file with the saved state at start.
    Startup,
    /// The guard's automatic rollback.
    Guard,
    /// A canary run moving to its next step.
    Canary,
}

impl ChangeOrigin {
    pub fn label(self) -> &'static str {
        match self {
            ChangeOrigin::Admin { .. } => "admin",
            ChangeOrigin::File => "file",
            ChangeOrigin::Signal => "signal",
            ChangeOrigin::Startup => "startup",
            ChangeOrigin::Guard => "guard",
            ChangeOrigin::Canary => "canary",
        }
    }

    pub fn uid(self) -> Option<u32> {
        match self {
            ChangeOrigin::Admin { uid } => uid,
            _ => None,
        }
    }
}

/// `time` as an audit record and a webhook event write it (RFC 3339, UTC).
pub fn rfc3339(time: WallMs) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(time.0)).to_string()
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(state_dir: &Path) -> AuditLog {
        AuditLog {
            path: state_dir.join("audit.log"),
        }
    }

    /// Appends one record and flushes it to disk before returning, so an
    /// acknowledged change is on record.
    pub fn append(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }

    /// Every readable record, oldest first (a torn last line is skipped).
    pub fn read_all(&self) -> Vec<AuditRecord> {
        let mut all: Vec<AuditRecord> = self.newest_first().collect();
        all.reverse();
        all
    }

    /// The last `n` records, oldest first. Reads the file from its end, so
    /// the cost follows `n`, not the age of the log.
    pub fn last(&self, n: usize) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = self.newest_first().take(n).collect();
        records.reverse();
        records
    }

    /// The newest record of `revision` (revisions are unique unless the
    /// state was lost and an older log kept).
    pub fn find(&self, revision: u64) -> Option<AuditRecord> {
        self.newest_first().find(|r| r.revision == revision)
    }

    /// The revision of the newest record, if any.
    pub fn last_revision(&self) -> Option<u64> {
        self.newest_first().next().map(|r| r.revision)
    }

    /// Readable records from the newest back; unreadable lines (a torn write
    /// after a crash, a hand edit) are skipped.
    fn newest_first(&self) -> impl Iterator<Item = AuditRecord> {
        let lines = std::fs::File::open(&self.path)
            .ok()
            .and_then(|file| ReverseLines::new(file).ok());
        lines
            .into_iter()
            .flatten()
            .filter_map(|line| serde_json::from_slice(&line).ok())
    }
}

/// The lines of a file from its last to its first, read in blocks from the
/// end.
struct ReverseLines {
    file: std::fs::File,
    /// Everything before this offset is still unread.
    pos: u64,
    /// The start of the earliest line seen so far, maybe incomplete.
    carry: Vec<u8>,
    /// Complete lines of the last block, in file order (popped from the end).
    ready: Vec<Vec<u8>>,
}

impl ReverseLines {
    const BLOCK: u64 = 64 * 1024;

    fn new(file: std::fs::File) -> std::io::Result<ReverseLines> {
        let pos = file.metadata()?.len();
        Ok(ReverseLines {
            file,
            pos,
            carry: Vec::new(),
            ready: Vec::new(),
        })
    }
}

impl Iterator for ReverseLines {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(line) = self.ready.pop() {
                return Some(line);
            }
            if self.pos == 0 {
                return (!self.carry.is_empty()).then(|| std::mem::take(&mut self.carry));
            }
            let start = self.pos.saturating_sub(Self::BLOCK);
            let mut block = vec![0; usize::try_from(self.pos - start).ok()?];
            self.file.seek(SeekFrom::Start(start)).ok()?;
            self.file.read_exact(&mut block).ok()?;
            self.pos = start;
            block.extend_from_slice(&self.carry);
            let mut parts = block.split(|b| *b == b'\n');
            // The first part may continue in the block before; every other
            // part is preceded by a newline and so is a whole line.
            self.carry = parts.next().unwrap_or_default().to_vec();
            self.ready = parts.map(<[u8]>::to_vec).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revision: u64) -> AuditRecord {
        AuditRecord {
            time: rfc3339(WallMs(1_700_000_000_000 + revision)),
            revision,
            command: format!("split blue={revision}"),
            origin: "admin".into(),
            uid: Some(1000),
            // Long enough lines that 400 of them span several blocks.
            reason: "x".repeat(usize::try_from(revision % 600).unwrap_or(0)),
            split: [("blue".to_string(), 100.0)].into(),
            instance: None,
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(
            rfc3339(WallMs(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn reads_back_from_the_end_across_blocks() {
        let dir = std::env::temp_dir().join(format!("sy-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = AuditLog::new(&dir);
        assert_eq!(log.last(5), vec![]);
        assert_eq!(log.last_revision(), None);
        for revision in 1..=400 {
            log.append(&record(revision)).unwrap();
        }
        // A torn last line, as a crash mid-append leaves it.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("audit.log"))
            .unwrap();
        file.write_all(b"{\"time\":\"2026").unwrap();

        let last: Vec<u64> = log.last(3).iter().map(|r| r.revision).collect();
        assert_eq!(last, vec![398, 399, 400]);
        assert_eq!(log.last_revision(), Some(400));
        assert_eq!(
            log.find(7).map(|r| r.command),
            Some("split blue=7".to_string())
        );
        assert_eq!(log.find(9999), None);
        let all: Vec<u64> = log.read_all().iter().map(|r| r.revision).collect();
        assert_eq!(all, (1..=400).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
