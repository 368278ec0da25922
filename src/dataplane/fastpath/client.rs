//! The client streams the fast path serves: a plain TCP connection, or a
//! TLS one after its handshake (ALPN http/1.1 or none). Both are read and
//! written the same way; they differ in how a request the fast path does
//! not carry is handed to pingora with its bytes put back.

use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::dataplane::head_gate::Replay;

/// A client connection the fast path can serve.
pub trait Client: AsyncRead + AsyncWrite + Unpin + Send {
    /// The stream pingora serves from here on, whose next reads return
    /// `bytes` (what the fast path read of the request it hands over).
    fn hand_over(self, bytes: &[u8]) -> Stream;
}

/// Plain TCP: pingora's own stream puts bytes back (its rewind buffer).
impl Client for Box<L4Stream> {
    fn hand_over(mut self, bytes: &[u8]) -> Stream {
        self.rewind(bytes);
        self
    }
}

/// TLS (pingora's TLS stream, boxed): the bytes are plaintext, which the
/// stream under the TLS layer can't take back, so a [`Replay`] in front
/// of it replays them (the head gate's [`Replay`]).
impl Client for Stream {
    fn hand_over(self, bytes: &[u8]) -> Stream {
        if bytes.is_empty() {
            return self;
        }
        Box::new(Replay::rewound(self, bytes.to_vec()))
    }
}
