//! Fleet mode, etcd unreachable: the changes that still act on this
//! instance alone (toward safety), kept until etcd answers again and
//! `fleet` writes them back.

use super::audit::{AuditRecord, ChangeOrigin};
use crate::protocol::Command;

/// A change applied here while etcd was unreachable, to be written back.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Replayed on the fleet's state if the fleet moved on meanwhile.
    pub command: Command,
    pub origin: ChangeOrigin,
    pub record: AuditRecord,
}

/// The guard's own rollbacks act here whatever etcd does: the command
/// replayed for the fleet if they could only act here.
pub(super) fn guard_writeback(origin: ChangeOrigin, reason: &str) -> Option<Command> {
    (origin == ChangeOrigin::Guard).then(|| Command::Rollback(Some(reason.to_string())))
}
