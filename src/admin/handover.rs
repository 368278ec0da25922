//! The admin HTTP listener across a binary upgrade. pingora hands its own
//! listening sockets to the successor; the admin HTTP listener is ours, so
//! we hand it over the same way: the old process, once the hand-over has
//! begun, offers the listening socket's file descriptor once on a private
//! Unix socket in the state dir (SCM_RIGHTS), and the successor takes it.
//! The kernel socket and its backlog never close, so no admin request is
//! refused during the upgrade, and the port is never shared with a
//! process that was not handed it.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Where the old process offers the listener.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("admin-http.handover")
}

/// Old process: offers `listener` once on `path`, waiting at most
/// `within` for the successor to come for it.
pub fn offer(path: &Path, listener: &TcpListener, within: Duration) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let server = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    server.set_nonblocking(true)?;
    let deadline = Instant::now() + within;
    let result = loop {
        match server.accept() {
            Ok((stream, _)) => break send(&stream, listener),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no successor came for it",
                ))
            }
            Err(e) => break Err(e),
        }
    };
    let _ = std::fs::remove_file(path);
    result
}

fn send(stream: &UnixStream, listener: &TcpListener) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    sendmsg(
        stream,
        &[IoSlice::new(b"L")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Successor: takes the listener from the old process, trying for at most
/// `within` (the old process offers it only once the hand-over began).
pub fn take(path: &Path, within: Duration) -> io::Result<TcpListener> {
    let deadline = Instant::now() + within;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e),
        }
    };
    stream.set_read_timeout(Some(within))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::empty(),
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(TcpListener::from(fd));
            }
        }
    }
    Err(io::Error::other("the old process sent no listener"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_crosses_to_the_taker_and_keeps_its_backlog() {
        let dir = std::env::temp_dir().join(format!("sy-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = socket_path(&dir);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A client that connects before the hand-over is accepted after it.
        let early = std::net::TcpStream::connect(addr).unwrap();
        let offering = {
            let path = path.clone();
            std::thread::spawn(move || offer(&path, &listener, Duration::from_secs(5)))
        };
        let taken = take(&path, Duration::from_secs(5)).unwrap();
        offering.join().unwrap().unwrap();
        assert_eq!(taken.local_addr().unwrap(), addr);
        let (accepted, _) = taken.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), early.local_addr().unwrap());
        assert!(!path.exists(), "the offer is cleaned up");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nobody_coming_is_a_timeout() {
        let dir = std::env::temp_dir().join(format!("sy-handover-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = offer(&socket_path(&dir), &listener, Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
