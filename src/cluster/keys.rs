//! The key layout under `[cluster] prefix` (shared with fleet-leader):
//!
//! | key | value |
//! |-----|-------|
//! | `{prefix}/state` | the fleet's runtime state ([`crate::cluster::store::FleetDoc`], JSON), one value |
//! | `{prefix}/audit/{revision:020}` | the audit record of that revision, naming the instance |
//! | `{prefix}/members/{name}` | a member's published counts and applied revision (lease-bound) |
//! | `{prefix}/leader` | the election name |
//!
//! Revisions are zero-padded to 20 digits so etcd's byte order is their
//! numeric order (a range read of the audit prefix comes back oldest first).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn state(&self) -> String {
        format!("{}/state", self.prefix)
    }

    pub fn audit(&self, revision: u64) -> String {
        format!("{}/audit/{revision:020}", self.prefix)
    }

    /// The prefix of every audit record.
    pub fn audit_prefix(&self) -> String {
        format!("{}/audit/", self.prefix)
    }

    pub fn member(&self, name: &str) -> String {
        format!("{}/members/{name}", self.prefix)
    }

    pub fn members_prefix(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn audit_keys_sort_as_their_revisions() {
        let k = Keys::new("/sy/prod");
        assert_eq!(k.state(), "/sy/prod/state");
        assert_eq!(k.audit(42), "/sy/prod/audit/00000000000000000042");
        assert!(k.audit(9) < k.audit(10));
        assert!(k.audit(10).starts_with(&k.audit_prefix()));
        assert_eq!(k.member("edge-1"), "/sy/prod/members/edge-1");
        assert_eq!(k.leader(), "/sy/prod/leader");
    }
}
