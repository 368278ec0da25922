//! Connecting to etcd: the endpoints, TLS (`ca_file`, `cert_file` +
//! `key_file`), authentication (`username` + `password_file`) and the
//! `[cluster] timeout`, turned into one `etcd_client::Client`.
//!
//! The client is made once and lives as long as the process: its channel
//! balances over the endpoints and reconnects to them by itself, so an etcd
//! member that dies is left out and one that returns is used again. What
//! needs a loop of its own (the watch stream, the write-back after an
//! outage) reconnects with [`Backoff`]: doubling, bounded, reset on success.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::config::types::ClusterConfig;

/// Why the cluster client could not be made or a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file named in `[cluster]` could not be read (it existed at load).
    #[error("cluster.{key}: cannot read {path}: {source}")]
    File {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// etcd did not answer within `[cluster] timeout`.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("cannot start the cluster runtime: {0}")]
    Runtime(String),
    /// A value could not be written as JSON (never expected).
    #[error("cannot encode for etcd: {0}")]
    Encode(serde_json::Error),
}

/// The options `[cluster]` asks for: connect timeout, HTTP/2 keep-alive
/// (so a dead member under a watch stream is noticed within about two
/// timeouts, not at the next TCP retransmit), TLS and the user.
pub fn options(cluster: &ClusterConfig) -> Result<ConnectOptions, ClusterError> {
    let keep_alive = cluster.timeout.max(Duration::from_millis(200));
    let mut options = ConnectOptions::new()
        .with_connect_timeout(cluster.timeout)
        // Without a quorum a member answers nothing current: fail instead.
        .with_require_leader(true)
        .with_keep_alive(keep_alive, keep_alive)
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &cluster.tls {
        let mut config = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            config = config.ca_certificate(Certificate::from_pem(read("ca_file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            config = config.identity(Identity::from_pem(
                read("cert_file", cert)?,
                read("key_file", key)?,
            ));
        }
        options = options.with_tls(config);
    }
    if let (Some(user), Some(file)) = (&cluster.username, &cluster.password_file) {
        let password = read("password_file", file)?;
        // A password file ends with a newline more often than not.
        let password = String::from_utf8_lossy(&password).trim_end().to_string();
        options = options.with_user(user.clone(), password);
    }
    Ok(options)
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|source| ClusterError::File {
        key,
        path: path.display().to_string(),
        source,
    })
}

/// The client for `[cluster]`. Without authentication this does not wait
/// for etcd (the channel connects on first use), so an instance starts and
/// serves with etcd down; with authentication it must fetch a token first,
/// bounded by `timeout`.
pub async fn connect(cluster: &ClusterConfig) -> Result<Client, ClusterError> {
    let options = options(cluster)?;
    within(
        cluster.timeout,
        Client::connect(&cluster.endpoints, Some(options)),
    )
    .await
}

/// `call`, or [`ClusterError::Timeout`] after `timeout`: every etcd call
/// the control plane waits on is bounded by `[cluster] timeout`.
pub async fn within<T, F>(timeout: Duration, call: F) -> Result<T, ClusterError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::Timeout(timeout)),
    }
}

/// Reconnect delays: 50 ms doubling to at most 1 s, back to 50 ms after a
/// success. Bounded so a returning etcd is used again within a second.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(50);
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }

    #[test]
    fn a_missing_password_file_is_named() {
        let mut c = ClusterConfig::defaults();
        c.endpoints = vec!["http://127.0.0.1:1".into()];
        c.name = "a".into();
        c.username = Some("u".into());
        c.password_file = Some("/nonexistent/sy-password".into());
        let e = options(&c).expect_err("no such file").to_string();
        assert!(e.contains("cluster.password_file"), "{e}");
    }
}
