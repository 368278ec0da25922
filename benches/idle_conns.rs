//! Idle keep-alive connection memory: how much RSS a proxy process gains
//! per idle client connection.
//!
//! Not a criterion bench (`harness = false`); it measures one running proxy:
//!
//! ```sh
//! IDLE_ADDR=127.0.0.1:8083 IDLE_PID=$(pidof switchyard) IDLE_CONNS=10000 \
//!   cargo bench --bench idle_conns
//! ```
//!
//! With `IDLE_TLS=1` every client connection is TLS (rustls, ALPN
//! http/1.1, server name `IDLE_SNI` [localhost]), trusting the PEM
//! certificate at `IDLE_CA`: what a TLS listener's idle connection costs,
//! record buffers included.
//!
//! `benches/load.sh` runs it with `IDLE=1` (and starts the proxies with
//! `ulimit -n 65536`, which the proxy needs for 10 000 clients).
//!
//! Steps, every wait bounded:
//! 1. VmRSS of IDLE_PID (baseline);
//! 2. open IDLE_CONNS connections in batches of IDLE_BATCH: connect all of a
//!    batch, send one keep-alive `GET /` on each, read each response (headers
//!    plus Content-Length / chunked body), keep the socket open;
//! 3. hold them idle for IDLE_HOLD_SECS, then VmRSS again, and check how many
//!    are still open (a peek that would block = open, EOF = closed by the proxy);
//! 4. close everything, wait IDLE_SETTLE_SECS, VmRSS once more.
//!
//! Prints one line per figure and a final machine-readable `RESULT` line.
//! Loopback only: IDLE_ADDR must be a 127.0.0.0/8 or ::1 address.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One client connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A TLS client trusting the PEM certificate(s) at `ca`, offering http/1.1.
fn tls_client(ca: &str) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("IDLE_CA {ca}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots
            .add(cert.expect("IDLE_CA: a PEM certificate"))
            .expect("IDLE_CA: a usable certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}")),
        Err(_) => default,
    }
}

/// (VmRSS kB, VmHWM kB, Threads) of a process, from /proc/PID/status.
fn proc_status(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let field = |key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

/// Sum over several processes (nginx: master + worker).
fn rss_kb(pids: &[u32]) -> (u64, u64, u64) {
    pids.iter().fold((0, 0, 0), |acc, &p| {
        let (r, h, t) = proc_status(p);
        (acc.0 + r, acc.1 + h, acc.2 + t)
    })
}

fn raise_nofile(want: u64) -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let target = want.min(lim.rlim_max);
        if lim.rlim_cur < target {
            lim.rlim_cur = target;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

/// Reads one HTTP/1.1 response (headers + body by Content-Length or chunked)
/// before `deadline`. Returns the status code.
fn read_response(s: &mut Conn, deadline: Instant) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("response header too large".into());
        }
        read_some(s, &mut buf, &mut chunk, deadline)?;
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let content_length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    if let Some(n) = content_length {
        while buf.len() < header_end + n {
            read_some(s, &mut buf, &mut chunk, deadline)?;
        }
    } else if chunked {
        while !buf[header_end..].windows(5).any(|w| w == b"0\r\n\r\n") {
            if buf.len() > 1024 * 1024 {
                return Err("chunked body too large".into());
            }
            read_some(s, &mut buf, &mut chunk, deadline)?;
        }
    } else {
        return Err("response without Content-Length or chunked body".into());
    }
    Ok(status)
}

fn read_some(
    s: &mut Conn,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("timed out reading response".into());
    }
    s.tcp()
        .set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    match s.read(chunk) {
        Ok(0) => Err("connection closed before the response ended".into()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Still open? A non-blocking peek: WouldBlock = open and idle, 0 = closed.
fn still_open(s: &Conn) -> bool {
    let s = s.tcp();
    let mut b = [0u8; 1];
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    open
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let addr: SocketAddr = std::env::var("IDLE_ADDR")
        .expect("IDLE_ADDR=ip:port of the proxy")
        .parse()
        .expect("IDLE_ADDR: ip:port");
    assert!(
        addr.ip().is_loopback(),
        "IDLE_ADDR must be a loopback address"
    );
    let pids: Vec<u32> = std::env::var("IDLE_PID")
        .expect("IDLE_PID=pid of the proxy (several: comma-separated, summed)")
        .split(',')
        .map(|p| p.trim().parse().expect("IDLE_PID: numbers"))
        .collect();
    let n: usize = env_or("IDLE_CONNS", 10_000);
    let batch: usize = env_or("IDLE_BATCH", 500).max(1);
    let hold = Duration::from_secs(env_or("IDLE_HOLD_SECS", 5));
    let settle = Duration::from_secs(env_or("IDLE_SETTLE_SECS", 3));
    let io_timeout = Duration::from_secs(env_or("IDLE_IO_TIMEOUT_SECS", 10));
    let label: String = env_or("IDLE_LABEL", "proxy".to_string());
    let tls = (env_or("IDLE_TLS", 0u8) == 1).then(|| {
        let ca: String = env_or("IDLE_CA", String::new());
        assert!(!ca.is_empty(), "IDLE_TLS=1 needs IDLE_CA=cert.pem");
        tls_client(&ca)
    });
    let sni: String = env_or("IDLE_SNI", "localhost".to_string());

    let nofile = raise_nofile(n as u64 + 1024);
    if nofile < n as u64 + 64 {
        eprintln!("idle_conns: RLIMIT_NOFILE is {nofile}, too low for {n} connections");
        std::process::exit(2);
    }

    let (rss0, _, threads0) = rss_kb(&pids);
    println!(
        "idle_conns [{label}] target {addr} pid {pids:?}: {n} {} connections, batches of {batch}",
        if tls.is_some() { "TLS" } else { "plain" }
    );
    println!(
        "  baseline          VmRSS {:8.1} MB   threads {threads0}",
        mb(rss0)
    );

    let started = Instant::now();
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n\r\n");
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let (mut failed, mut non2xx) = (0usize, 0usize);
    let mut first_error: Option<String> = None;
    while conns.len() + failed < n {
        let this = batch.min(n - conns.len() - failed);
        let mut open: Vec<Conn> = Vec::with_capacity(this);
        for _ in 0..this {
            match TcpStream::connect_timeout(&addr, io_timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(io_timeout));
                    let _ = s.set_read_timeout(Some(io_timeout));
                    let mut s = match &tls {
                        None => Conn::Plain(s),
                        Some(config) => {
                            let name = rustls::pki_types::ServerName::try_from(sni.clone())
                                .expect("IDLE_SNI: a server name");
                            let client = rustls::ClientConnection::new(Arc::clone(config), name)
                                .expect("a TLS client");
                            Conn::Tls(Box::new(rustls::StreamOwned::new(client, s)))
                        }
                    };
                    // The TLS handshake happens in this write.
                    match s.write_all(request.as_bytes()) {
                        Ok(()) => open.push(s),
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert(format!("write: {e}"));
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(format!("connect: {e}"));
                }
            }
        }
        let deadline = Instant::now() + io_timeout;
        for mut s in open {
            match read_response(&mut s, deadline) {
                Ok(code) => {
                    if !(200..300).contains(&code) {
                        non2xx += 1;
                    }
                    conns.push(s);
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let (rss_open, _, threads_open) = rss_kb(&pids);
    println!(
        "  {} open+answered VmRSS {:8.1} MB   threads {threads_open}   ({open_secs:.1} s; failed {failed}, non-2xx {non2xx})",
        conns.len(),
        mb(rss_open)
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }

    std::thread::sleep(hold);
    let alive = conns.iter().filter(|s| still_open(s)).count();
    let (rss_idle, hwm_idle, threads_idle) = rss_kb(&pids);
    let per_conn = if alive > 0 {
        (rss_idle.saturating_sub(rss0) * 1024) as f64 / alive as f64
    } else {
        0.0
    };
    println!(
        "  after {}s idle     VmRSS {:8.1} MB   VmHWM {:8.1} MB   threads {threads_idle}   still open {alive}/{}",
        hold.as_secs(),
        mb(rss_idle),
        mb(hwm_idle),
        conns.len()
    );
    println!(
        "  per idle connection: {:.0} bytes ({:.1} KiB) = (idle RSS - baseline) / open connections",
        per_conn,
        per_conn / 1024.0
    );

    let count = conns.len();
    drop(conns);
    std::thread::sleep(settle);
    let (rss_closed, _, _) = rss_kb(&pids);
    println!(
        "  {}s after closing  VmRSS {:8.1} MB",
        settle.as_secs(),
        mb(rss_closed)
    );
    println!(
        "RESULT label={label} tls={} conns={count} alive={alive} failed={failed} non2xx={non2xx} \
         rss_base_kb={rss0} rss_open_kb={rss_open} rss_idle_kb={rss_idle} hwm_kb={hwm_idle} \
         rss_closed_kb={rss_closed} bytes_per_conn={per_conn:.0} threads={threads_idle}",
        u8::from(tls.is_some())
    );
    if failed > 0 || alive < count {
        std::process::exit(1);
    }
}
