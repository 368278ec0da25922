//! The answers switchyard itself gives a client instead of an origin's:
//! the same status, headers and body on both request paths (the fast path
//! writes them as bytes, the pingora path through pingora's session, which
//! adds its own `date` and `connection` headers).

use std::io::Write;

/// Why switchyard answers the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// No backend could be reached (every connect failed), or the origin
    /// failed before its response began.
    BadGateway,
    /// No route matched and no pool has a share of the split.
    NoShare,
    /// The chosen pool has no usable backend (named, so an operator sees
    /// which pool is empty or drained).
    NoBackend { pool: &'a str },
}

impl Answer<'_> {
    pub fn status(&self) -> u16 {
        match self {
            Answer::BadGateway => 502,
            Answer::NoShare | Answer::NoBackend { .. } => 503,
        }
    }

    /// The plain-text body, when there is one.
    pub fn body(&self) -> Option<String> {
        match self {
            Answer::NoBackend { pool } => Some(no_backend_body(pool)),
            Answer::BadGateway | Answer::NoShare => None,
        }
    }

    /// The whole HTTP/1.1 response, appended to `out`; it closes the
    /// connection. The bodiless answers are constants, so the fast path
    /// formats nothing for them.
    pub fn write_h1(&self, out: &mut Vec<u8>) {
        match self {
            Answer::BadGateway => out.extend_from_slice(BAD_GATEWAY),
            Answer::NoShare => out.extend_from_slice(NO_SHARE),
            Answer::NoBackend { pool } => {
                let body = no_backend_body(pool);
                let _ = write!(
                    out,
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: {}\r\ncache-control: private, no-store\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    }
}

/// The 502 as the fast path writes it.
pub const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\
cache-control: private, no-store\r\nconnection: close\r\n\r\n";

/// The 503 when no pool has a share, as the fast path writes it.
pub const NO_SHARE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
cache-control: private, no-store\r\nconnection: close\r\n\r\n";

/// The body of the 503 answered when the chosen pool has no usable backend.
pub fn no_backend_body(pool: &str) -> String {
    format!("switchyard: pool \"{pool}\" has no usable backend\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_carry_their_status_and_name_the_empty_pool() {
        let mut out = Vec::new();
        Answer::NoBackend { pool: "green" }.write_h1(&mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 503 "));
        assert!(text.ends_with("\r\n\r\nswitchyard: pool \"green\" has no usable backend\n"));
        let body = no_backend_body("green");
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        for (answer, status) in [(Answer::BadGateway, "502"), (Answer::NoShare, "503")] {
            let mut out = Vec::new();
            answer.write_h1(&mut out);
            assert!(out.starts_with(format!("HTTP/1.1 {status} ").as_bytes()));
            assert_eq!(answer.status().to_string(), status);
            assert_eq!(answer.body(), None);
        }
    }
}
