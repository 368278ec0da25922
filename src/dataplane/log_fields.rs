//! The access log fields of a request on pingora's path (TLS, h2, h2c and
//! the HTTP/1.1 the fast path hands over), read from the session when the
//! request ends. The fast path's come from `access_log::Capture`.

use std::time::Duration;

use pingora::proxy::Session;

use super::exchange::client_ip;
use crate::access_log::capture::REQUEST_ID;
use crate::access_log::Entry;

/// What the adapter noted on the way, besides the session.
pub struct Noted<'a> {
    /// `route`, `sticky`, `split`, or empty before a pool was chosen.
    pub why: &'static str,
    /// The id switchyard made and sent upstream (the client sent none).
    pub request_id: Option<&'a [u8; 32]>,
    /// From the request's start until the upstream's response head.
    pub upstream: Option<Duration>,
    /// The status switchyard answered itself (`fail_to_proxy`), 0 if none.
    pub answered: u16,
}

/// The entry of `session`'s request (pool, backend, duration and failure
/// are the exchange's to fill in).
pub fn entry<'a>(session: &'a Session, noted: Noted<'a>) -> Entry<'a> {
    let request = session.req_header();
    let field = |name: &str| request.headers.get(name).map_or(&b""[..], |v| v.as_bytes());
    let status = match (session.response_written(), noted.answered) {
        (Some(response), _) => response.status.as_u16(),
        (None, 0) => 499,
        (None, answered) => answered,
    };
    Entry {
        client: client_ip(session.client_addr()),
        method: request.method.as_str().as_bytes(),
        target: request
            .uri
            .path_and_query()
            .map_or(&b""[..], |p| p.as_str().as_bytes()),
        protocol: match request.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        },
        status,
        bytes: session.body_bytes_sent() as u64,
        duration: Duration::ZERO,
        upstream: noted.upstream,
        pool: None,
        backend: None,
        why: noted.why,
        request_id: noted
            .request_id
            .map_or_else(|| field(REQUEST_ID), |id| &id[..]),
        referer: field("referer"),
        user_agent: field("user-agent"),
        failure: None,
    }
}
