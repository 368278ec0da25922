#!/usr/bin/env python3
"""benches/idle_conns.rs's steps in Python, for when the bench binary can't
be built in time (its release build with unwinding rebuilds every crate).
Same environment (IDLE_ADDR, IDLE_PID, IDLE_CONNS, IDLE_BATCH,
IDLE_HOLD_SECS, IDLE_SETTLE_SECS, IDLE_TLS, IDLE_CA, IDLE_SNI, IDLE_LABEL)
and the same RESULT line, so benches/load.sh runs it as IDLE_BIN:

    IDLE_BIN=benches/idle_conns.py LOAD=0 LIVE=0 IDLE=1 benches/load.sh

1. VmRSS of IDLE_PID (baseline); 2. IDLE_CONNS connections in batches, one
keep-alive GET / each, its response read, the socket kept open; 3. after
IDLE_HOLD_SECS, VmRSS again and how many are still open; 4. close all,
VmRSS after IDLE_SETTLE_SECS. Every wait is bounded (socket timeouts).
Loopback only."""
import ipaddress, os, resource, socket, ssl, sys, time


def env(name, default):
    return type(default)(os.environ.get(name, default))


def rss_kb(pids):
    rss = hwm = threads = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    rss += int(value.split()[0])
                elif key == "VmHWM":
                    hwm += int(value.split()[0])
                elif key == "Threads":
                    threads += int(value.split()[0])
    return rss, hwm, threads


def read_response(s):
    """Status of one response (Content-Length or chunked body read)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(16384)
        if not chunk:
            raise OSError("closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    for _ in range(10_000):
        if length is not None and len(rest) >= length:
            return status
        if chunked and rest.endswith(b"0\r\n\r\n"):
            return status
        if length is None and not chunked:
            return status
        chunk = s.recv(16384)
        if not chunk:
            raise OSError("closed in the body")
        rest += chunk
    raise OSError("body too long")


def still_open(s):
    """A read that would block = open; EOF or an error = closed."""
    s.setblocking(False)
    try:
        got = s.recv(1) if isinstance(s, ssl.SSLSocket) else s.recv(1, socket.MSG_PEEK)
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except OSError:
        return False
    return bool(got)


def main():
    host, _, port = os.environ["IDLE_ADDR"].rpartition(":")
    host = host.strip("[]")
    assert ipaddress.ip_address(host).is_loopback, "IDLE_ADDR: loopback only"
    pids = [int(p) for p in os.environ["IDLE_PID"].split(",")]
    n = env("IDLE_CONNS", 10_000)
    batch = max(1, env("IDLE_BATCH", 500))
    hold = env("IDLE_HOLD_SECS", 5)
    settle = env("IDLE_SETTLE_SECS", 3)
    io_timeout = env("IDLE_IO_TIMEOUT_SECS", 10)
    label = env("IDLE_LABEL", "proxy")
    tls = env("IDLE_TLS", 0) == 1
    sni = env("IDLE_SNI", "localhost")
    context = None
    if tls:
        context = ssl.create_default_context(cafile=os.environ["IDLE_CA"])
        context.set_alpn_protocols(["http/1.1"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, n + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if max(soft, want) < n + 64:
        sys.exit(f"idle_conns: RLIMIT_NOFILE is {want}, too low for {n} connections")

    rss0, _, threads0 = rss_kb(pids)
    print(f"idle_conns.py [{label}] target {host}:{port} pid {pids}: {n} {'TLS' if tls else 'plain'} connections, batches of {batch}")
    print(f"  baseline          VmRSS {rss0 / 1024:8.1f} MB   threads {threads0}")
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n\r\n".encode()
    started = time.monotonic()
    conns, failed, non2xx, first_error = [], 0, 0, None
    while len(conns) + failed < n:
        this = min(batch, n - len(conns) - failed)
        opened = []
        for _ in range(this):
            try:
                s = socket.create_connection((host, int(port)), timeout=io_timeout)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if context:
                    s = context.wrap_socket(s, server_hostname=sni)
                s.sendall(request)
                opened.append(s)
            except OSError as e:
                failed += 1
                first_error = first_error or f"connect/write: {e}"
        deadline = time.monotonic() + io_timeout
        for s in opened:
            try:
                # One deadline for the batch's answers, as in idle_conns.rs.
                s.settimeout(max(0.01, deadline - time.monotonic()))
                if not 200 <= read_response(s) < 300:
                    non2xx += 1
                conns.append(s)
            except (OSError, ValueError, IndexError) as e:
                failed += 1
                first_error = first_error or f"read: {e}"
    rss_open, _, threads_open = rss_kb(pids)
    print(f"  {len(conns)} open+answered VmRSS {rss_open / 1024:8.1f} MB   threads {threads_open}   ({time.monotonic() - started:.1f} s; failed {failed}, non-2xx {non2xx})")
    if first_error:
        print(f"  first error: {first_error}")
    time.sleep(hold)
    alive = sum(1 for s in conns if still_open(s))
    rss_idle, hwm_idle, threads_idle = rss_kb(pids)
    per_conn = max(0, rss_idle - rss0) * 1024 / alive if alive else 0.0
    print(f"  after {hold}s idle     VmRSS {rss_idle / 1024:8.1f} MB   VmHWM {hwm_idle / 1024:8.1f} MB   threads {threads_idle}   still open {alive}/{len(conns)}")
    print(f"  per idle connection: {per_conn:.0f} bytes ({per_conn / 1024:.1f} KiB) = (idle RSS - baseline) / open connections")
    count = len(conns)
    for s in conns:
        s.close()
    conns.clear()
    time.sleep(settle)
    rss_closed, _, _ = rss_kb(pids)
    print(f"  {settle}s after closing  VmRSS {rss_closed / 1024:8.1f} MB")
    print(f"RESULT label={label} tls={int(tls)} conns={count} alive={alive} failed={failed} non2xx={non2xx} "
          f"rss_base_kb={rss0} rss_open_kb={rss_open} rss_idle_kb={rss_idle} hwm_kb={hwm_idle} "
          f"rss_closed_kb={rss_closed} bytes_per_conn={per_conn:.0f} threads={threads_idle}")
    if failed or alive < count:
        sys.exit(1)


if __name__ == "__main__":
    main()
