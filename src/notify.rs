//! Webhooks: a POST per change event to every `[notify].webhooks` URL,
//! `http://` or `https://` (rustls; the system's roots or `[notify].ca_file`),
//! with the configured `headers` and a body in the configured `format`: the
//! event as JSON, or Slack's `{"text": …}` made from the same event.
//!
//! The controller hands events (typed: `protocol::answer::Event`, the body
//! SPEC §8 pins) to [`Notifier::send`], which never blocks: it
//! only tries to put them on a bounded queue (an event that finds the queue
//! full is dropped, logged and counted). A dispatcher fans each event out to
//! one worker per URL — workers are created on demand, so URLs added by a
//! reload are served — and each worker delivers its events in order, with
//! per-attempt timeouts and exponential backoff for at most `retry_for`. A
//! receiver that hangs or is down therefore slows down only its own queue:
//! never traffic, the admin socket, the guard, or the other receivers.
//!
//! Header values may be secrets (a bearer token) and so may a URL's path (a
//! Slack webhook's is): log lines show a URL's scheme and authority only,
//! and no message carries a header value.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::{CertificateDer, ClientConfig, RootCertStore, ServerName, TlsConnector};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::config::{NotifyConfig, NotifyFormat};
use crate::protocol::answer::Event;
use crate::shared::Shared;
use crate::tls::material::crypto_provider;

const QUEUE: usize = 1024;

/// The sending half, owned by the controller.
#[derive(Debug)]
pub struct Notifier {
    tx: mpsc::Sender<Arc<Event>>,
    shared: Arc<Shared>,
}

/// The receiving half, run by [`WebhookService`].
pub type EventQueue = mpsc::Receiver<Arc<Event>>;

impl Notifier {
    pub fn new(shared: Arc<Shared>) -> (Notifier, EventQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Notifier { tx, shared }, rx)
    }

    /// Queues an event for every webhook; never waits.
    pub fn send(&self, event: Event) {
        if self.shared.table().config.notify.webhooks.is_empty() {
            return;
        }
        self.shared.webhooks_pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Arc::new(event)).is_err() {
            self.shared.webhooks_pending.fetch_sub(1, Ordering::Relaxed);
            self.shared.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
            log::warn!("webhook queue full: event dropped");
        }
    }
}

pub struct WebhookService {
    shared: Arc<Shared>,
    queue: Mutex<Option<EventQueue>>,
}

impl WebhookService {
    pub fn new(shared: Arc<Shared>, queue: EventQueue) -> Self {
        WebhookService {
            shared,
            queue: Mutex::new(Some(queue)),
        }
    }
}

#[async_trait]
impl BackgroundService for WebhookService {
    /// Runs until the process exits, shutdown included: events queued when
    /// SIGTERM (or an upgrade) arrives are still delivered while the process
    /// drains, and the drain waits for them (`webhooks_pending`) until the
    /// grace period ends.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut queue) = self.queue.lock().take() else {
            return;
        };
        let mut workers: HashMap<String, mpsc::Sender<Arc<Event>>> = HashMap::new();
        let tls = Arc::new(TlsClients::default());
        let pending = &self.shared.webhooks_pending;
        while let Some(event) = queue.recv().await {
            let notify = self.shared.table().config.notify.clone();
            for url in &notify.webhooks {
                let worker = workers.entry(url.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    let (shared, tls) = (Arc::clone(&self.shared), Arc::clone(&tls));
                    tokio::spawn(deliver_all(url.clone(), rx, shared, tls));
                    tx
                });
                pending.fetch_add(1, Ordering::Relaxed);
                if worker.try_send(Arc::clone(&event)).is_err() {
                    pending.fetch_sub(1, Ordering::Relaxed);
                    self.shared.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!("webhook {}: queue full, event dropped", shown(url));
                }
            }
            // The event itself is fanned out: its deliveries count now.
            pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One URL's worker: its events, in order, each retried until `retry_for`.
async fn deliver_all(
    url: String,
    mut rx: mpsc::Receiver<Arc<Event>>,
    shared: Arc<Shared>,
    tls: Arc<TlsClients>,
) {
    let shown = shown(&url);
    while let Some(event) = rx.recv().await {
        let notify = shared.table().config.notify.clone();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let body = body(&event, notify.format);
        loop {
            let attempt = post(&url, body.clone(), &notify, &tls);
            let failure = match tokio::time::timeout(notify.timeout, attempt).await {
                Ok(Ok(())) => {
                    shared.webhooks_ok.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {:?}", notify.timeout),
            };
            log::debug!("webhook {shown}: {failure}");
            if started.elapsed() + backoff > notify.retry_for {
                shared.webhooks_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "webhook {shown}: gave up on a {} event after {:.1}s: {failure}",
                    event.event,
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        shared.webhooks_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A URL as log lines show it: scheme and authority, the path elided (a
/// Slack webhook's path is its secret).
fn shown(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let host = uri.host().unwrap_or("?");
            let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
            let path = if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
                "/…"
            } else {
                ""
            };
            format!("{scheme}://{host}{port}{path}")
        }
        Err(_) => "(unparsable URL)".to_string(),
    }
}

/// The POST body of `event` in `format`.
fn body(event: &Event, format: NotifyFormat) -> Bytes {
    let body = match format {
        NotifyFormat::Json => serde_json::to_vec(event),
        NotifyFormat::Slack => serde_json::to_vec(&serde_json::json!({
            "text": slack_escape(&one_line(event)),
        })),
    };
    Bytes::from(body.unwrap_or_default())
}

/// The event in one line: what happened, to which pool, at which revision,
/// and why (`rollback (pool green, revision 7): guard: …`).
pub fn one_line(event: &Event) -> String {
    let pool = match &event.pool {
        Some(pool) => format!("pool {pool}, "),
        None => String::new(),
    };
    let reason = event
        .reason
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} ({pool}revision {}): {reason}",
        event.event, event.revision
    )
}

/// Slack's message text treats `&`, `<` and `>` as markup.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// rustls settings for `https://` webhooks, built again only when the CA
/// bundle changes (a reload that changes `ca_file`).
#[derive(Default)]
struct TlsClients {
    last: Mutex<Option<(Vec<CertificateDer<'static>>, Arc<ClientConfig>)>>,
}

impl TlsClients {
    fn for_ca(&self, ca: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
        let mut last = self.last.lock();
        if let Some((bundle, config)) = &*last {
            if bundle.as_slice() == ca {
                return Ok(Arc::clone(config));
            }
        }
        let config = client_config(ca)?;
        *last = Some((ca.to_vec(), Arc::clone(&config)));
        Ok(config)
    }
}

/// Verifying client settings: `ca` as the trust anchors, else the system's
/// (including `SSL_CERT_FILE` and `SSL_CERT_DIR`); HTTP/1.1 by ALPN.
fn client_config(ca: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if ca.is_empty() {
        if let Err(e) = pingora::tls::load_platform_certs_incl_env_into_store(&mut roots) {
            log::warn!("webhooks: loading the system's CA certificates: {e}");
        }
        if roots.is_empty() {
            log::warn!(
                "webhooks: no system CA certificates found; https:// webhooks need [notify] ca_file"
            );
        }
    } else {
        for cert in ca {
            roots.add(cert.clone()).map_err(|e| format!("CA: {e}"))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One POST; success is a 2xx answer.
async fn post(
    url: &str,
    body: Bytes,
    notify: &NotifyConfig,
    tls: &TlsClients,
) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    // `[::1]` → `::1` for the socket and the TLS name; `Host` keeps brackets.
    let host_header = uri.host().ok_or("URL without host")?;
    let host = host_header.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = match uri.port_u16() {
        Some(port) => format!("{host_header}:{port}"),
        None => host_header.to_string(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "switchyard")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    for (name, value) in &notify.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if !https {
        return exchange(stream, request).await;
    }
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("TLS name: {e}"))?;
    let stream = TlsConnector::from(tls.for_ca(&notify.ca)?)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    exchange(stream, request).await
}

/// Sends `request` over `stream` (HTTP/1.1) and checks for a 2xx answer.
async fn exchange<S>(stream: S, request: http::Request<Full<Bytes>>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::answer::SplitDoc;

    fn event(pool: Option<&str>, reason: &str) -> Event {
        let mut event = Event::plain(
            "rollback",
            7,
            "2024-05-01T12:00:00Z".to_string(),
            SplitDoc::default(),
            reason.to_string(),
            "guard",
        );
        event.pool = pool.map(str::to_string);
        event
    }

    #[test]
    fn the_slack_body_is_the_events_one_line_explanation() {
        let e = event(
            Some("green"),
            "guard: error_rate 19.9% > limit 5.00%\n& more",
        );
        let body: serde_json::Value =
            serde_json::from_slice(&body(&e, NotifyFormat::Slack)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "text": "rollback (pool green, revision 7): guard: error_rate 19.9% &gt; limit 5.00% &amp; more"
            })
        );
        assert_eq!(
            one_line(&event(None, "operator split")),
            "rollback (revision 7): operator split"
        );
    }

    #[test]
    fn the_json_body_is_the_event() {
        let e = event(Some("green"), "why");
        let back: Event = serde_json::from_slice(&body(&e, NotifyFormat::Json)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn logged_urls_keep_no_path() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(shown("http://[::1]:9999/x?k=v"), "http://[::1]:9999/…");
        assert_eq!(shown("http://127.0.0.1:9999"), "http://127.0.0.1:9999");
    }
}
