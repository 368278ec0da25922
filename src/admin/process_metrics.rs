//! The standard `process_*` series (the names and meanings every Prometheus
//! client library exports), read from `/proc` at scrape time.
//!
//! Written here rather than taken from the `prometheus` crate's `process`
//! feature, which would pull in `procfs` for six numbers. Each family is
//! rendered whole (HELP, TYPE, sample) or not at all: a file that cannot be
//! read or parsed (not Linux, a hardened `/proc`) drops its series, never
//! the scrape.

use std::fmt::Write;

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`,
/// what `sysconf(_SC_CLK_TCK)` answers). The kernel converts to it whatever
/// its internal `HZ`; it is 100 on every architecture Rust supports.
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/self/stat` the series need.
#[derive(Debug, PartialEq)]
pub(crate) struct Stat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size, in bytes.
    pub vsize: u64,
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields
/// are counted from the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<Stat> {
    let (_, rest) = line.rsplit_once(')')?;
    // rest's first field is field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes (the file says kB).
pub(crate) fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kb * 1024)
}

/// The soft limit on open files in a `/proc/<pid>/limits` text (`None`
/// when it is `unlimited`).
pub(crate) fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the epoch) in a `/proc/stat` text.
pub(crate) fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, value: Option<String>) {
    if let Some(value) = value {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Appends the process series of this process.
pub(crate) fn render(out: &mut String) {
    let stat = read("/proc/self/stat").and_then(|s| parse_stat(&s));
    family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stat.as_ref()
            .map(|s| (s.cpu_ticks as f64 / USER_HZ).to_string()),
    );
    family(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        read("/proc/self/status")
            .and_then(|s| parse_rss_bytes(&s))
            .map(|b| b.to_string()),
    );
    family(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.as_ref().map(|s| s.vsize.to_string()),
    );
    // The directory handle that lists the fds is one of them, as in every
    // client library's count.
    family(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count().to_string()),
    );
    family(
        out,
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors (the soft limit).",
        read("/proc/self/limits")
            .and_then(|s| parse_max_fds(&s))
            .map(|n| n.to_string()),
    );
    let btime = read("/proc/stat").and_then(|s| parse_btime(&s));
    family(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stat.as_ref()
            .zip(btime)
            .map(|(s, boot)| (boot as f64 + s.start_ticks as f64 / USER_HZ).to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up stat line whose command name holds spaces and parentheses;
    /// utime 250 + stime 50 ticks, started 12345 ticks after boot, 100 MiB
    /// of virtual memory.
    const STAT: &str = "4242 (sw (edge) 1) S 1 4242 4242 0 -1 4194560 1200 0 3 0 \
        250 50 0 0 20 0 9 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 \
        0 4096 17415 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 12345,
                vsize: 104_857_600,
            })
        );
    }

    #[test]
    fn a_truncated_or_garbled_stat_line_gives_nothing() {
        assert_eq!(
            parse_stat("4242 (sw) S 1 4242 4242 0 -1 4194560 1200 0"),
            None
        );
        assert_eq!(parse_stat("4242 sw S 1"), None);
        assert_eq!(parse_stat(&STAT.replace(" 250 50 ", " x 50 ")), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\tswitchyard\nVmPeak:\t  900000 kB\nVmRSS:\t   23456 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_bytes(status), Some(23456 * 1024));
        assert_eq!(parse_rss_bytes("Name:\tkthreadd\n"), None);
        let limits =
            "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max cpu time              unlimited            unlimited            seconds   \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        let proc_stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_btime(proc_stat), Some(1_700_000_000));
    }

    #[test]
    fn this_process_renders_every_series_once() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert_eq!(out.matches(&format!("# TYPE {name} ")).count(), 1, "{out}");
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{out}"));
            assert!(
                value > 0.0 || name == "process_cpu_seconds_total",
                "{name} = {value}"
            );
        }
    }
}
