//! Connecting to etcd: the endpoints, TLS (`ca_file`, `cert_file` +
//! `key_file`), authentication (`username` + `password_file`) and the
//! `[cluster] timeout`, turned into one `etcd_client::Client`.
//!
//! The client is made without contacting etcd, with or without a user:
//! the user's token is fetched on first contact ([`authenticate`], from the
//! watch loop and the election), so an instance with a password starts and
//! serves its last state while etcd is down, like one without. Once
//! authenticated, the client fetches a new token by itself when etcd says
//! the old one is invalid (an etcd restart forgets its simple tokens).
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
    /// The error and its causes (a TLS failure is in the cause: "invalid
    /// peer certificate: UnknownIssuer").
    #[error("etcd: {}", describe(.0))]
    Etcd(#[from] etcd_client::Error),
    /// etcd answered and refused `[cluster] username`'s password.
    #[error("etcd refused the credentials of user \"{user}\" (cluster.username, cluster.password_file): {message}")]
    Credentials { user: String, message: String },
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
        .with_keep_alive_while_idle(true)
        // Used once a user is authenticated: a token etcd forgot is renewed.
        .with_auto_token_refresh(true);
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
    Ok(options)
}

/// `[cluster] username` and the password read from `password_file`.
pub fn credentials(cluster: &ClusterConfig) -> Result<Option<(String, String)>, ClusterError> {
    let (Some(user), Some(file)) = (&cluster.username, &cluster.password_file) else {
        return Ok(None);
    };
    let password = read("password_file", file)?;
    // A password file ends with a newline more often than not.
    let password = String::from_utf8_lossy(&password).trim_end().to_string();
    Ok(Some((user.clone(), password)))
}

/// Fetches the user's token and keeps the credentials in `client` (shared
/// by its clones), so later calls renew the token by themselves. A refusal
/// is [`ClusterError::Credentials`]; anything else means etcd is not there.
pub async fn authenticate(
    client: &mut Client,
    (user, password): (String, String),
    timeout: Duration,
) -> Result<(), ClusterError> {
    match within(timeout, client.update_user(Some((user.clone(), password)))).await {
        Err(ClusterError::Etcd(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("authentication is not enabled") =>
        {
            // No token to fetch: calls go without one, and work.
            log::warn!("cluster.username is set but etcd has authentication disabled");
            Ok(())
        }
        // gRPC's INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION
        // and UNAUTHENTICATED: etcd answered, and said no.
        Err(ClusterError::Etcd(etcd_client::Error::GRpcStatus(status)))
            if matches!(i32::from(status.code()), 3 | 7 | 9 | 16) =>
        {
            Err(ClusterError::Credentials {
                user,
                message: status.message().to_string(),
            })
        }
        other => other,
    }
}

/// etcd-client's error with the causes it does not show itself (its
/// `Error` has no `source`; the gRPC status and the transport error do).
fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let mut text = format!("{:?}: {}", status.code(), status.message());
            if let Some(cause) = std::error::Error::source(status) {
                let causes = chain(cause);
                if !text.contains(&causes) {
                    text.push_str(&format!(" ({causes})"));
                }
            }
            text
        }
        etcd_client::Error::TransportError(t) => format!("transport error: {}", chain(t)),
        other => other.to_string(),
    }
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|source| ClusterError::File {
        key,
        path: path.display().to_string(),
        source,
    })
}

/// The client for `[cluster]`. It does not wait for etcd (the channel
/// connects on first use, the user authenticates on first contact), so an
/// instance starts and serves with etcd down.
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
        let e = credentials(&c).expect_err("no such file").to_string();
        assert!(e.contains("cluster.password_file"), "{e}");
    }
}
