//! The fleet's runtime state in etcd: one change is ONE transaction.
//!
//! ```text
//! if   mod_revision({prefix}/state) == the revision the local state was applied from
//!      [and create_revision(fence.key) == fence.create_revision]   (the leader's automation)
//! then put {prefix}/state = FleetDoc; put {prefix}/audit/{revision:020} = AuditRecord
//! else get {prefix}/state; [get fence.key]
//! ```
//!
//! So a change planned on a state someone else has since replaced is
//! refused whole ([`Outcome::Conflict`], with who replaced it and which
//! revision), and a deposed leader's write is refused ([`Outcome::Fenced`]).
//! etcd's own revision of the state key (its `mod_revision`) is what the
//! watch resumes from; the switchyard revision (`state.revision`) counts
//! changes as `history` shows them.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use serde::{Deserialize, Serialize};

use super::client::{within, ClusterError};
use super::keys::Keys;
use super::Fence;
use crate::control::state::StateDoc;
use crate::protocol::answer::AuditRecord;

/// The value of `{prefix}/state`: the state, who committed it and the
/// audit record of the change (the watchers append it to their local log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetDoc {
    /// The member name of the instance that committed this state.
    pub instance: String,
    pub record: AuditRecord,
    pub state: StateDoc,
}

/// The state as read from etcd, with the etcd revision it was written at.
#[derive(Debug, Clone)]
pub struct Current {
    pub doc: FleetDoc,
    pub mod_revision: i64,
}

#[derive(Debug)]
pub enum Outcome {
    /// Committed; the etcd revision of the write (the state key's new
    /// `mod_revision`).
    Committed { mod_revision: i64 },
    /// Someone committed first: the state now in etcd (`None` if the key
    /// was deleted).
    Conflict { current: Option<Box<Current>> },
    /// The fence's key is gone or was created again: not the leader.
    Fenced,
}

/// Why a value under the prefix could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("{key} is not a switchyard fleet state: {source}")]
    Invalid {
        key: String,
        source: serde_json::Error,
    },
}

/// Between attempts at a call that met a dead member.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
    timeout: Duration,
}

impl Store {
    pub fn new(client: Client, keys: Keys, timeout: Duration) -> Store {
        Store {
            client,
            keys,
            timeout,
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `call` again on a failure to reach a member, until `timeout` is
    /// spent: the client's channel spreads calls over the endpoints and
    /// hands a call to a dead member a connection error instead of
    /// skipping it, so the next attempt most likely meets a live one.
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // One attempt may hang on a member that is going away: a quarter
        // of the budget each, so a live member still gets its turn.
        let attempt = (self.timeout / 4).max(Duration::from_millis(100));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match within(left.min(attempt), call()).await {
                Err(e @ (ClusterError::Etcd(_) | ClusterError::Timeout(_)))
                    if attempts < 20 && tokio::time::Instant::now() + RETRY_PAUSE < deadline =>
                {
                    log::debug!("etcd call failed ({e}), trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(ClusterError::Timeout(_)) => return Err(ClusterError::Timeout(self.timeout)),
                other => return other,
            }
        }
    }

    /// The fleet's state, `None` for an empty prefix.
    pub async fn read(&self) -> Result<Option<Current>, StoreError> {
        let key = self.keys.state();
        let response = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| current_of(&key, kv))
            .transpose()
    }

    /// One change as one transaction (see the module's comment).
    /// `expected` is the `mod_revision` the change was planned on (0: the
    /// prefix was empty). `earlier` are audit records of changes made here
    /// while etcd was unreachable, written back in the same transaction.
    pub async fn commit(
        &self,
        expected: i64,
        fence: Option<&Fence>,
        doc: &FleetDoc,
        earlier: &[AuditRecord],
    ) -> Result<Outcome, StoreError> {
        let state_key = self.keys.state();
        let value = serde_json::to_vec(doc).map_err(ClusterError::Encode)?;
        let record = serde_json::to_vec(&doc.record).map_err(ClusterError::Encode)?;
        let mut compares = vec![Compare::mod_revision(
            state_key.clone(),
            CompareOp::Equal,
            expected,
        )];
        let mut otherwise = vec![TxnOp::get(state_key.clone(), None)];
        if let Some(fence) = fence {
            compares.push(Compare::create_revision(
                fence.key.clone(),
                CompareOp::Equal,
                fence.create_revision,
            ));
            otherwise.push(TxnOp::get(fence.key.clone(), None));
        }
        let mut puts = vec![
            TxnOp::put(state_key.clone(), value, None),
            TxnOp::put(self.keys.audit(doc.record.revision), record, None),
        ];
        for r in earlier.iter().filter(|r| r.revision != doc.record.revision) {
            let bytes = serde_json::to_vec(r).map_err(ClusterError::Encode)?;
            puts.push(TxnOp::put(self.keys.audit(r.revision), bytes, None));
        }
        let txn = Txn::new().when(compares).and_then(puts).or_else(otherwise);
        let response = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            let mod_revision = response.header().map(|h| h.revision()).unwrap_or(0);
            return Ok(Outcome::Committed { mod_revision });
        }
        let answers = response.op_responses();
        let first_kv = |i: usize| match answers.get(i) {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
            _ => None,
        };
        if let Some(fence) = fence {
            let held = first_kv(1).is_some_and(|kv| kv.create_revision() == fence.create_revision);
            if !held {
                return Ok(Outcome::Fenced);
            }
        }
        let current = match first_kv(0) {
            Some(kv) => Box::new(current_of(&state_key, &kv)?),
            None => return Ok(Outcome::Conflict { current: None }),
        };
        // An attempt whose answer was lost may have committed: then the
        // state in etcd is this very change, and a retry "conflicts" with it.
        if current.doc.instance == doc.instance && current.doc.record == doc.record {
            return Ok(Outcome::Committed {
                mod_revision: current.mod_revision,
            });
        }
        Ok(Outcome::Conflict {
            current: Some(current),
        })
    }

    /// The fleet's last `n` audit records, oldest first.
    pub async fn history(&self, n: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(n).unwrap_or(i64::MAX));
        let prefix = self.keys.audit_prefix();
        let response = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let (prefix, options) = (prefix.clone(), options.clone());
                async move { kv.get(prefix, Some(options)).await }
            })
            .await?;
        let mut records: Vec<AuditRecord> = response
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        records.reverse();
        Ok(records)
    }

    /// One audit record of the fleet.
    pub async fn audit_record(&self, revision: u64) -> Result<Option<AuditRecord>, StoreError> {
        let key = self.keys.audit(revision);
        let response = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Every `{prefix}/members/{name}` as `(name, value)`.
    pub async fn members(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.keys.members_prefix();
        let response = self
            .retrying(|| {
                let mut kv = self.client.kv_client();
                let prefix = prefix.clone();
                async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                let name = String::from_utf8_lossy(kv.key());
                let name = name.strip_prefix(&prefix).unwrap_or(&name).to_string();
                (name, kv.value().to_vec())
            })
            .collect())
    }
}

/// The state as a read (or a refused transaction's read-back) found it.
fn current_of(key: &str, kv: &etcd_client::KeyValue) -> Result<Current, StoreError> {
    let doc = serde_json::from_slice(kv.value()).map_err(|source| DocError::Invalid {
        key: key.to_string(),
        source,
    })?;
    Ok(Current {
        doc,
        mod_revision: kv.mod_revision(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Doc(#[from] DocError),
}
