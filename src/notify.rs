//! Webhooks: a JSON POST per change event to every `[notify].webhooks` URL.
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
use tokio::sync::mpsc;

use crate::protocol::answer::Event;
use crate::shared::Shared;

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
        if self.tx.try_send(Arc::new(event)).is_err() {
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
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut queue) = self.queue.lock().take() else {
            return;
        };
        let mut workers: HashMap<String, mpsc::Sender<Arc<Event>>> = HashMap::new();
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => return,
                event = queue.recv() => match event { Some(e) => e, None => return },
            };
            let notify = self.shared.table().config.notify.clone();
            for url in &notify.webhooks {
                let worker = workers.entry(url.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(deliver_all(url.clone(), rx, Arc::clone(&self.shared)));
                    tx
                });
                if worker.try_send(Arc::clone(&event)).is_err() {
                    self.shared.webhooks_dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!("webhook {url}: queue full, event dropped");
                }
            }
        }
    }
}

/// One URL's worker: its events, in order, each retried until `retry_for`.
async fn deliver_all(url: String, mut rx: mpsc::Receiver<Arc<Event>>, shared: Arc<Shared>) {
    while let Some(event) = rx.recv().await {
        let notify = shared.table().config.notify.clone();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let body = Bytes::from(serde_json::to_vec(&*event).unwrap_or_default());
        loop {
            match tokio::time::timeout(notify.timeout, post(&url, body.clone())).await {
                Ok(Ok(())) => {
                    shared.webhooks_ok.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(e)) => log::debug!("webhook {url}: {e}"),
                Err(_) => log::debug!("webhook {url}: timed out"),
            }
            if started.elapsed() + backoff > notify.retry_for {
                shared.webhooks_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "webhook {url}: gave up on a {} event after {:?}",
                    event.event,
                    started.elapsed()
                );
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// One POST; success is a 2xx answer.
async fn post(url: &str, body: Bytes) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    // `[::1]` → `::1` for the socket; the Host header keeps the brackets.
    let host_header = uri.host().ok_or("URL without host")?;
    let host = host_header.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::post(path)
        .header(http::header::HOST, format!("{host_header}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "switchyard")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
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
