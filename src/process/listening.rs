//! Which TCP addresses this very process listens on, read from procfs.
//!
//! Readiness asks this instead of connecting to its own listen addresses: a
//! connect also succeeds when another process holds the port (pingora then
//! keeps retrying its own `bind()`), and `/ready` would say 200 for a proxy
//! that receives nothing. A socket counts only when it is in LISTEN state
//! and one of this process's file descriptors refers to it, which also holds
//! for sockets inherited from the predecessor in a binary upgrade.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The local addresses of every listening TCP socket this process holds.
pub fn own_listening_addrs() -> io::Result<HashSet<SocketAddr>> {
    let inodes = own_socket_inodes()?;
    let mut addrs = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        // A kernel without IPv6 has no tcp6 table; that is not an error.
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        addrs.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_listening_line)
                .filter(|(_, inode)| inodes.contains(inode))
                .map(|(addr, _)| addr),
        );
    }
    Ok(addrs)
}

/// The inode numbers of the sockets behind this process's descriptors
/// (`/proc/self/fd/N` links read `socket:[INODE]`).
fn own_socket_inodes() -> io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // A descriptor closed between listing and reading is simply skipped.
        let Ok(target) = entry.and_then(|e| std::fs::read_link(e.path())) else {
            continue;
        };
        let inode: Option<u64> = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok());
        inodes.extend(inode);
    }
    Ok(inodes)
}

/// The TCP state code procfs prints for LISTEN.
const TCP_LISTEN: &str = "0A";

/// One row of `/proc/net/tcp{,6}`: its local address and inode when the
/// socket is listening. Columns: `sl local rem st tx:rx tr:when retrnsmt uid
/// timeout inode …`.
fn parse_listening_line(line: &str) -> Option<(SocketAddr, u64)> {
    let columns: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (columns.get(1)?, columns.get(3)?, columns.get(9)?);
    if *state != TCP_LISTEN {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((SocketAddr::new(parse_ip(ip)?, port), inode.parse().ok()?))
}

/// procfs prints an address as 32-bit words, each in the host's byte order,
/// so the bytes in memory (`to_ne_bytes`) are the address in network order.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        hex.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            Some(Ipv6Addr::from(bytes).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders an address the way procfs does, from the bytes in memory.
    fn proc_hex(ip: IpAddr) -> String {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        bytes
            .chunks_exact(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    }

    #[test]
    fn rows_are_parsed_for_both_families_and_only_when_listening() {
        for addr in ["127.0.0.1:8080", "0.0.0.0:443", "[::1]:9090", "[::]:80"] {
            let addr: SocketAddr = addr.parse().expect("test address");
            let local = format!("{}:{:04X}", proc_hex(addr.ip()), addr.port());
            let row = format!(
                "  3: {local} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0"
            );
            assert_eq!(parse_listening_line(&row), Some((addr, 4242)), "{row}");
            let established = row.replace(" 0A ", " 01 ");
            assert_eq!(parse_listening_line(&established), None);
        }
    }

    #[test]
    fn malformed_rows_are_ignored() {
        for row in [
            "",
            "sl local_address",
            "0: zz:0050 0 0A 0 0 0 0 0 1",
            "0: 0100007F 0 0A",
        ] {
            assert_eq!(parse_listening_line(row), None, "{row:?}");
        }
    }

    #[test]
    fn a_socket_this_process_listens_on_is_found_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let addrs = own_listening_addrs().expect("procfs");
        assert!(addrs.contains(&addr), "{addr} missing from {addrs:?}");
        drop(listener);
        assert!(!own_listening_addrs().expect("procfs").contains(&addr));
    }
}
