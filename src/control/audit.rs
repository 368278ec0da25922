//! The audit log: one JSON line per applied change in `state_dir/audit.log`
//! (time, revision, command, origin, uid, reason, the split after). Append
//! only; `history` and `undo` read it back.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub revision: u64,
    pub command: String,
    /// `admin`, `file`, `signal`, `startup`, `guard`, `canary`.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    pub reason: String,
    /// The split in force after this revision, pool → percent.
    pub split: std::collections::BTreeMap<String, f64>,
}

pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
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
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    pub fn last(&self, n: usize) -> Vec<AuditRecord> {
        let all = self.read_all();
        all[all.len().saturating_sub(n)..].to_vec()
    }
}
