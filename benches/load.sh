#!/usr/bin/env bash
# benches/load.sh -- switchyard's whole-proxy load benchmark, loopback only.
#
# Compares switchyard with nginx and HAProxy (each when installed) doing the
# same job: one worker each, upstream keep-alive, two origins "blue" and
# "green" weighted 90/10.
#
#   origins   nginx, 1 worker, `return 200 "blue\n"` / "green\n" on two free
#             127.0.0.1 ports; without nginx, the origins of `switchyard demo`
#   proxies   switchyard  threads=$THREADS, split blue=90 green=10, admin
#                         socket and state in the temp dir, admin HTTP on a
#                         free loopback port, health checks on
#             nginx       1 worker, upstream weight=90/10, keepalive 256
#             haproxy     nbthread 1, roundrobin weight 90/10, http-reuse always
#   pinning   origin + proxies on SUT_CPU (0), wrk on LOAD_CPU (1), so every
#             proxy gets the same single core and wrk never competes with it
#
# Steps:
#   1. load (LOAD=1): ROUNDS interleaved rounds (the order rotates each round);
#      per proxy and round WARMUP s unrecorded, then DURATION s of
#      `wrk -t$WRK_THREADS -c$CONNS --latency`. Table: median req/s
#      (min..max), median p50/p99, ratio to HAProxy (median over rounds of
#      req/s / HAProxy's req/s in the same round), errors (socket errors +
#      non-2xx, summed over rounds), and each proxy's own CPU time per
#      request, user + system (/proc/PID/stat, children included).
#   2. live shift (LIVE=1): one wrk run of LIVE_DURATION s per proxy while the
#      split flips every SHIFT_INTERVAL s between 90/10 and 0/100:
#        switchyard  `switchyard ctl -s SOCK split blue=B green=G`
#        haproxy     runtime API over its stats socket: `set server be/X weight N`
#        nginx       skipped (it can only shift by config reload)
#      Before the run the shift is checked (0/100 must send 20/20 to green).
#      Reports req/s, wrk errors and failed shift commands.
#   3. idle connections (IDLE=1): benches/idle_conns.rs against each proxy:
#      VmRSS with IDLE_CONNS idle keep-alive client connections, bytes per
#      connection. Run it alone with LOAD=0 LIVE=0 IDLE=1 for fresh processes.
#
# Every process is started by this script and stopped by its PID on exit
# (also on error, Ctrl-C, SIGTERM); every loop and wait is bounded; nothing
# listens anywhere but 127.0.0.1.
#
# Usage (from the repo root or anywhere):
#   benches/load.sh                       # 3 rounds x 10 s, 64 connections
#   QUICK=1 benches/load.sh               # 1 round x 3 s: does the script work?
#   SWITCHYARD_BIN=target/release/switchyard benches/load.sh   # skip the build
#   LOAD=0 LIVE=0 IDLE=1 benches/load.sh  # idle-connection memory only
#
# Knobs (environment, defaults in brackets):
#   ROUNDS [3]  DURATION [10] s  WARMUP [2] s  CONNS [64]  WRK_THREADS [1]
#   THREADS [1] switchyard worker threads     PAUSE [1] s between runs
#   LOAD [1]  LIVE [1]  LIVE_DURATION [=DURATION]  SHIFT_INTERVAL [1] s
#   IDLE [0]  IDLE_CONNS [10000]  IDLE_BATCH [500]  IDLE_HOLD_SECS [5]
#   PROXIES ["switchyard nginx haproxy"]  (those not installed are skipped)
#   SUT_CPU [0]  LOAD_CPU [1]  NOFILE [65536]  KEEP [0]: 1 keeps the temp dir
#   SWITCHYARD_BIN [build with `cargo build --release`; CARGO_TARGET_DIR honoured]
#   SWITCHYARD_BIN_B [none]: a second switchyard binary, benched as
#     "switchyard-b" in the same interleaved rounds (A/B of a build change)
#   ACCESS_LOG [1]: also bench "switchyard-log", the same binary with the JSON
#     access log on ([access_log] path = RUN_DIR/switchyard-log/access.log),
#     in the same interleaved rounds; reports its req/s over switchyard's
#     (median of the per-round ratios; the goal is >= 0.90) and the lines
#     written and dropped
#   MIRROR [1]: also bench "switchyard-mirror", the same binary with
#     [mirror] pool = "green", percent = 100 (every GET copied to green's
#     origin, answers discarded), in the same interleaved rounds; reports its
#     req/s and CPU per request over switchyard's (median of the per-round
#     ratios; the goal is >= 0.90) and the copies answered and dropped. The
#     copies double the origin's requests, and the origin shares SUT_CPU
#     with the proxy: the ratio includes that work too.
#   MIRROR_CPU [none]: the copies go to a second nginx origin (pool
#     "shadow", mirror-only) pinned to this CPU instead, so SUT_CPU runs the
#     same origin work in both variants and the ratio is the proxy's own
#     cost of mirroring (MIRROR_CPU=1 shares wrk's CPU: wrk has headroom
#     at these rates, but say so with the figure)
#   SWITCHYARD_SERVER_B [none]: extra [server] lines for switchyard-b, e.g.
#     SWITCHYARD_SERVER_B='fast_path = false' (pingora's HTTP path); alone,
#     it benches the same binary twice
#   IDLE_BIN [build with `cargo bench --bench idle_conns --no-run`];
#     IDLE_BIN=benches/idle_conns.py runs the same steps in Python, with
#     no build (the bench's build rebuilds every crate with unwinding)
#   SCHEME [http]: https = every proxy also gets a TLS listener (TLS 1.3,
#     self-signed ECDSA P-256 certificate made here with openssl, ALPN
#     http/1.1) and wrk, the live shift and the idle bench (IDLE_TLS=1) go
#     through it: TLS keep-alive HTTP/1.1
#   CONNS=1000 is the 1 000-connection case (p99 is the figure to watch)
#   QUICK [0]: 1 = ROUNDS=1 DURATION=3 WARMUP=1 LIVE_DURATION=3 PAUSE=0

set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
  ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-3} WARMUP=${WARMUP:-1} PAUSE=${PAUSE:-0}
  LIVE_DURATION=${LIVE_DURATION:-3}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PAUSE=${PAUSE:-1}
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
THREADS=${THREADS:-1}
LOAD=${LOAD:-1}
LIVE=${LIVE:-1}
LIVE_DURATION=${LIVE_DURATION:-$DURATION}
SHIFT_INTERVAL=${SHIFT_INTERVAL:-1}
IDLE=${IDLE:-0}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_BATCH=${IDLE_BATCH:-500}
IDLE_HOLD_SECS=${IDLE_HOLD_SECS:-5}
PROXIES=${PROXIES:-"switchyard nginx haproxy"}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NOFILE=${NOFILE:-65536}
KEEP=${KEEP:-0}
ACCESS_LOG=${ACCESS_LOG:-1}
MIRROR=${MIRROR:-1}
MIRROR_CPU=${MIRROR_CPU:-}
[[ -z $MIRROR_CPU || $MIRROR_CPU =~ ^[0-9]+$ ]] || die "MIRROR_CPU must be a CPU number (got '$MIRROR_CPU')"
SCHEME=${SCHEME:-http}
[[ $SCHEME == http || $SCHEME == https ]] || die "SCHEME must be http or https"

readonly HOST=127.0.0.1   # loopback only
W_BLUE=90 W_GREEN=10

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in ROUNDS DURATION WARMUP PAUSE CONNS WRK_THREADS THREADS LOAD LIVE LIVE_DURATION \
         SHIFT_INTERVAL IDLE IDLE_CONNS IDLE_BATCH IDLE_HOLD_SECS NOFILE KEEP QUICK ACCESS_LOG MIRROR; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((ROUNDS >= 1 && DURATION >= 1 && CONNS >= 1 && WRK_THREADS >= 1 && THREADS >= 1 \
  && SHIFT_INTERVAL >= 1 && LIVE_DURATION >= 1)) || die "ROUNDS DURATION CONNS WRK_THREADS THREADS SHIFT_INTERVAL LIVE_DURATION must be >= 1"
for tool in wrk taskset curl ss timeout; do
  command -v "$tool" >/dev/null || die "$tool is required (apt-get install wrk util-linux curl iproute2 coreutils)"
done

# ------------------------------------------------------ process bookkeeping --
RUN_DIR=$(mktemp -d /tmp/switchyard-load.XXXXXX)
chmod 755 "$RUN_DIR"           # nginx workers run as 'nobody'
declare -a PIDS=()             # every long-running process we started
declare -A PID_OF=()           # name -> pid
BG_WRK=""                      # wrk running in the background (live shift)
DEMO_DIR=""                    # switchyard demo's own temp dir (fallback origins)

# start_bg NAME CMD... : run CMD pinned to SUT_CPU, output in $RUN_DIR/NAME.log
start_bg() {
  local name=$1; shift
  taskset -c "$SUT_CPU" "$@" >"$RUN_DIR/$name.log" 2>&1 &
  PIDS+=("$!"); PID_OF[$name]=$!
}

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL; then SIGKILL its children
# that outlived it (nginx workers), matched by pid and command name
stop_pid() {
  local pid=$1 i kid comm
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  local -a kids=()
  for kid in $(pgrep -P "$pid" 2>/dev/null || true); do
    kids+=("$kid:$(ps -o comm= -p "$kid" 2>/dev/null || true)")
  done
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for kid in "${kids[@]}"; do
    comm=$(ps -o comm= -p "${kid%%:*}" 2>/dev/null || true)
    [[ -n $comm && $comm == "${kid#*:}" ]] && kill -KILL "${kid%%:*}" 2>/dev/null || true
  done
}

cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  [[ -n $BG_WRK ]] && stop_pid "$BG_WRK"
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  [[ -n $DEMO_DIR && -d $DEMO_DIR ]] && rm -rf "$DEMO_DIR"
  if ((KEEP)); then log "kept $RUN_DIR"; else rm -rf "$RUN_DIR"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

alive() { kill -0 "$1" 2>/dev/null; }
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

declare -A TAKEN=()
# Ports below the kernel's ephemeral range, so no client socket (ours: 10 000
# of them in the idle step, or anyone's) can be holding one.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || die "ephemeral port range starts at $EPHEMERAL_LOW: no room for our listeners"
# free_port: a loopback port no socket uses (bounded tries)
free_port() {
  local i p
  for ((i = 0; i < 200; i++)); do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
    [[ -n ${TAKEN[$p]:-} ]] && continue
    ss -Htan "sport = :$p" 2>/dev/null | grep -q . && continue
    TAKEN[$p]=1; echo "$p"; return 0
  done
  die "no free port found"
}

# wait_port PORT PID SECONDS
wait_port() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    listening "$1" && return 0
    alive "$2" || return 1
    sleep 0.1
  done
  return 1
}

# wait_http PORT SECONDS: until GET / answers 2xx
wait_http() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    curl -sf --max-time 1 -o /dev/null "http://$HOST:$1/" && return 0
    sleep 0.2
  done
  return 1
}

# -------------------------------------------------------------- binaries --
if [[ -z ${SWITCHYARD_BIN:-} ]]; then
  log "building switchyard (cargo build --release)"
  (cd "$REPO" && cargo build --release --quiet) || die "cargo build failed"
  tdir=${CARGO_TARGET_DIR:-$REPO/target}
  [[ $tdir == /* ]] || tdir=$REPO/$tdir
  SWITCHYARD_BIN=$tdir/release/switchyard
fi
[[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN $SWITCHYARD_BIN is not an executable"
if [[ -n ${SWITCHYARD_SERVER_B:-} && -z ${SWITCHYARD_BIN_B:-} ]]; then
  SWITCHYARD_BIN_B=$SWITCHYARD_BIN
fi
if [[ -n ${SWITCHYARD_BIN_B:-} ]]; then
  [[ -x $SWITCHYARD_BIN_B ]] || die "SWITCHYARD_BIN_B $SWITCHYARD_BIN_B is not an executable"
  SWITCHYARD_BIN_B=$(cd "$(dirname "$SWITCHYARD_BIN_B")" && pwd)/$(basename "$SWITCHYARD_BIN_B")
fi
SWITCHYARD_BIN=$(cd "$(dirname "$SWITCHYARD_BIN")" && pwd)/$(basename "$SWITCHYARD_BIN")

if ((IDLE)) && [[ -z ${IDLE_BIN:-} ]]; then
  log "building benches/idle_conns.rs (cargo bench --bench idle_conns --no-run)"
  IDLE_BIN=$(cd "$REPO" && cargo bench --bench idle_conns --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*idle_conns-[0-9a-f]*\)).*/\1/p' | tail -n 1)
  [[ -n $IDLE_BIN ]] || die "could not build the idle_conns bench"
  [[ $IDLE_BIN == /* ]] || IDLE_BIN=$REPO/$IDLE_BIN
fi

# Which peers exist here.
declare -a TARGETS=()
for p in $PROXIES; do
  case $p in
    switchyard) TARGETS+=(switchyard)
                if ((ACCESS_LOG)); then TARGETS+=(switchyard-log); fi
                if ((MIRROR)); then TARGETS+=(switchyard-mirror); fi
                if [[ -n ${SWITCHYARD_BIN_B:-} ]]; then TARGETS+=(switchyard-b); fi ;;
    nginx)   if command -v nginx >/dev/null; then TARGETS+=(nginx); else log "nginx not installed: skipped"; fi ;;
    haproxy) if command -v haproxy >/dev/null; then TARGETS+=(haproxy); else log "haproxy not installed: skipped"; fi ;;
    *) die "unknown proxy '$p' in PROXIES" ;;
  esac
done
((${#TARGETS[@]})) || die "no proxy to run"
has() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
# HAProxy's live shift goes through its runtime API socket.
if has haproxy && [[ $LIVE == 1 ]] && ! command -v socat >/dev/null; then
  die "socat is required for HAProxy's live shift (apt-get install socat), or run with LIVE=0"
fi

# Proxies and the idle bench need many descriptors; children inherit this.
ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE_NOW=$(ulimit -n)

# TLS listeners (SCHEME=https): one certificate for every proxy.
declare -A TPORT=()
if [[ $SCHEME == https ]]; then
  command -v openssl >/dev/null || die "openssl is required for SCHEME=https"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$RUN_DIR/key.pem" -out "$RUN_DIR/cert.pem" >/dev/null 2>&1 || die "openssl: no certificate"
  cat "$RUN_DIR/cert.pem" "$RUN_DIR/key.pem" >"$RUN_DIR/haproxy.pem"
fi
# The port wrk and the idle bench use for proxy NAME.
lport() { if [[ $SCHEME == https ]]; then echo "${TPORT[$1]}"; else echo "${PORT[$1]}"; fi; }

# ---------------------------------------------------------------- origins --
declare -A PORT=()
nginx_top() {  # $1 = subdir; common top of an nginx config
  local d=$RUN_DIR/$1
  mkdir -p "$d/tmp"
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE_NOW;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 30000; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  default_type text/plain;
EOF
}

if command -v nginx >/dev/null; then
  ORIGIN_KIND="nginx (1 worker)"
  PORT[blue]=$(free_port); PORT[green]=$(free_port)
  mkdir -p "$RUN_DIR/origin/tmp"
  { nginx_top origin
    echo "  server { listen $HOST:${PORT[blue]};  location / { return 200 \"blue\\n\"; } }"
    echo "  server { listen $HOST:${PORT[green]}; location / { return 200 \"green\\n\"; } }"
    echo "}"
  } >"$RUN_DIR/origin/nginx.conf"
  start_bg origin nginx -p "$RUN_DIR/origin/" -c "$RUN_DIR/origin/nginx.conf" -e "$RUN_DIR/origin/error.log"
  wait_port "${PORT[blue]}" "${PID_OF[origin]}" 10 && wait_port "${PORT[green]}" "${PID_OF[origin]}" 10 \
    || { cat "$RUN_DIR/origin/error.log" >&2 2>/dev/null; die "origin nginx did not start"; }
else
  # Fallback: `switchyard demo` serves blue and green on free ports (its
  # proxy also runs, on a port of ours, unused).
  ORIGIN_KIND="switchyard demo origins (nginx not installed)"
  demo_port=$(free_port); demo_admin=$(free_port)
  start_bg origin env RUST_LOG=warn "$SWITCHYARD_BIN" demo --listen "$HOST:$demo_port" --admin-http "$HOST:$demo_admin"
  DEMO_DIR=/tmp/switchyard-demo-${PID_OF[origin]}
  for ((i = 0; i < 100; i++)); do
    grep -q '^ *origins ' "$RUN_DIR/origin.log" 2>/dev/null && break
    alive "${PID_OF[origin]}" || break
    sleep 0.1
  done
  line=$(grep -m1 '^ *origins ' "$RUN_DIR/origin.log" || true)
  [[ $line =~ blue\ +[0-9.]+:([0-9]+)\ +green\ +[0-9.]+:([0-9]+) ]] \
    || { cat "$RUN_DIR/origin.log" >&2; die "switchyard demo origins did not start"; }
  PORT[blue]=${BASH_REMATCH[1]}; PORT[green]=${BASH_REMATCH[2]}
fi

# The mirror's own origin (MIRROR_CPU): nginx, the same answer as green's.
if [[ -n $MIRROR_CPU ]] && ((MIRROR)); then
  command -v nginx >/dev/null || die "MIRROR_CPU needs nginx"
  PORT[shadow]=$(free_port); mkdir -p "$RUN_DIR/mirror-origin/tmp"
  { nginx_top mirror-origin
    echo "  server { listen $HOST:${PORT[shadow]}; location / { return 200 \"green\\n\"; } }"
    echo "}"
  } >"$RUN_DIR/mirror-origin/nginx.conf"
  SUT_CPU=$MIRROR_CPU start_bg mirror-origin nginx -p "$RUN_DIR/mirror-origin/" \
    -c "$RUN_DIR/mirror-origin/nginx.conf" -e "$RUN_DIR/mirror-origin/error.log"
  wait_port "${PORT[shadow]}" "${PID_OF[mirror-origin]}" 10 \
    || { cat "$RUN_DIR/mirror-origin/error.log" >&2 2>/dev/null; die "mirror origin nginx did not start"; }
fi

# ---------------------------------------------------------------- proxies --
HA_SOCK=$RUN_DIR/haproxy/admin.sock
declare -A BIN_OF=() ADMIN_OF=()

# start_switchyard NAME BIN : a switchyard named NAME (switchyard,
# switchyard-log, switchyard-b)
start_switchyard() {
  local name=$1 bin=$2 d=$RUN_DIR/$1 extra="" log_section=""
  [[ $name == switchyard-b ]] && extra=${SWITCHYARD_SERVER_B:-}
  [[ $name == switchyard-log ]] && log_section="[access_log]
path = \"$d/access.log\"
format = \"json\""
  [[ $name == switchyard-mirror ]] && log_section="[mirror]
pool = \"green\"
percent = 100"
  [[ $name == switchyard-mirror && -n ${PORT[shadow]:-} ]] && log_section="[mirror]
pool = \"shadow\"
percent = 100

[pools.shadow]
backends = [\"$HOST:${PORT[shadow]}\"]"
  PORT[$name]=$(free_port); BIN_OF[$name]=$bin
  local tls_section=""
  if [[ $SCHEME == https ]]; then
    TPORT[$name]=$(free_port)
    tls_section="[[server.tls]]
listen = \"$HOST:${TPORT[$name]}\"
cert = \"$RUN_DIR/cert.pem\"
key = \"$RUN_DIR/key.pem\""
  fi
  local admin_http; admin_http=$(free_port); ADMIN_OF[$name]=$admin_http
  mkdir -p "$d/state"
  cat >"$d/switchyard.toml" <<EOF
[server]
listen = ["$HOST:${PORT[$name]}"]
threads = $THREADS
grace_period = "1s"
upstream_keepalive_pool = 1024
$extra
$tls_section

[admin]
socket = "$d/admin.sock"
http = "$HOST:$admin_http"
state_dir = "$d/state"

[pools.blue]
backends = ["$HOST:${PORT[blue]}"]

[pools.green]
backends = ["$HOST:${PORT[green]}"]

[split]
blue = $W_BLUE
green = $W_GREEN

[health]
enabled = true
path = "/"
interval = "2s"
timeout = "1s"

$log_section
EOF
  "$bin" check -c "$d/switchyard.toml" >/dev/null || die "$name rejected the generated config"
  start_bg "$name" env RUST_LOG=warn "$bin" run -c "$d/switchyard.toml"
  wait_port "${PORT[$name]}" "${PID_OF[$name]}" 15 && wait_http "${PORT[$name]}" 15 \
    || { tail -n 30 "$RUN_DIR/$name.log" >&2; die "$name did not start"; }
}
if has switchyard; then start_switchyard switchyard "$SWITCHYARD_BIN"; fi
if has switchyard-log; then start_switchyard switchyard-log "$SWITCHYARD_BIN"; fi
if has switchyard-mirror; then start_switchyard switchyard-mirror "$SWITCHYARD_BIN"; fi
if has switchyard-b; then start_switchyard switchyard-b "$SWITCHYARD_BIN_B"; fi

# nginx proxy config: weights 90/10, upstream keep-alive
if has nginx; then
  PORT[nginx]=$(free_port)
  [[ $SCHEME == https ]] && TPORT[nginx]=$(free_port)
  mkdir -p "$RUN_DIR/nginx/tmp"
  { nginx_top nginx
    cat <<EOF
  upstream backends {
    server $HOST:${PORT[blue]} weight=$W_BLUE;
    server $HOST:${PORT[green]} weight=$W_GREEN;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen $HOST:${PORT[nginx]};
$( [[ $SCHEME == https ]] && printf '    listen %s:%s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n' "$HOST" "${TPORT[nginx]}" "$RUN_DIR/cert.pem" "$RUN_DIR/key.pem")
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  } >"$RUN_DIR/nginx/nginx.conf"
  start_bg nginx nginx -p "$RUN_DIR/nginx/" -c "$RUN_DIR/nginx/nginx.conf" -e "$RUN_DIR/nginx/error.log"
  wait_port "${PORT[nginx]}" "${PID_OF[nginx]}" 10 && wait_http "${PORT[nginx]}" 10 \
    || { cat "$RUN_DIR/nginx/error.log" >&2; die "nginx proxy did not start"; }
fi

if has haproxy; then
  PORT[haproxy]=$(free_port)
  HA_TLS_BIND=""
  if [[ $SCHEME == https ]]; then
    TPORT[haproxy]=$(free_port)
    HA_TLS_BIND="bind $HOST:${TPORT[haproxy]} ssl crt $RUN_DIR/haproxy.pem alpn http/1.1"
  fi
  HA_MAXCONN=$(( (NOFILE_NOW - 200) / 2 )); ((HA_MAXCONN > 30000)) && HA_MAXCONN=30000
  mkdir -p "$RUN_DIR/haproxy"
  cat >"$RUN_DIR/haproxy/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $HA_MAXCONN               # haproxy reserves ~2 fds per connection
  stats socket $HA_SOCK mode 600 level admin

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s

frontend fe
  bind $HOST:${PORT[haproxy]}
  $HA_TLS_BIND
  default_backend be

backend be
  balance roundrobin
  server blue $HOST:${PORT[blue]} weight $W_BLUE
  server green $HOST:${PORT[green]} weight $W_GREEN
EOF
  start_bg haproxy haproxy -db -f "$RUN_DIR/haproxy/haproxy.cfg"
  wait_port "${PORT[haproxy]}" "${PID_OF[haproxy]}" 10 && wait_http "${PORT[haproxy]}" 10 \
    || { cat "$RUN_DIR/haproxy.log" >&2; die "haproxy did not start"; }
fi

# ----------------------------------------------------------------- helpers --
# wrk_run SECONDS PORT OUTFILE : pinned to LOAD_CPU, hard time bound
wrk_run() {
  timeout -k 5 $(($1 + 30)) taskset -c "$LOAD_CPU" \
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"$1"s --latency --timeout 5s "$SCHEME://$HOST:$2/" >"$3" 2>&1 || true
}

# cpu_ticks PID -> "utime stime" (clock ticks) of PID and its children
# (nginx's work is in its worker process)
cpu_ticks() {
  local pids=("$1") p u=0 st=0 a b
  mapfile -t -O 1 pids < <(pgrep -P "$1" || true)
  for p in "${pids[@]}"; do
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
    u=$((u + a)); st=$((st + b))
  done
  echo "$u $st"
}

# parse FILE -> "rps p50_ms p99_ms requests errors"   (errors = socket errors + non-2xx)
parse() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return -1
    }
    BEGIN { rps = 0; p50 = -1; p99 = -1; req = 0; err = 0 }
    /^Requests\/sec:/           { rps = $2 }
    /^ +50% /                   { p50 = ms($2) }
    /^ +99% /                   { p99 = ms($2) }
    / requests in /             { req = $1 }
    /Socket errors:/            { gsub(",", ""); err += $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { err += $5 }
    END { print rps, p50, p99, req, err }' "$1"
}

median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) { print "nan"; exit }
  print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# shift NAME BLUE GREEN : set the split on a running proxy; non-zero on failure
shift_split() {
  case $1 in
    switchyard*) timeout 10 "${BIN_OF[$1]}" ctl -s "$RUN_DIR/$1/admin.sock" split blue="$2" green="$3" >/dev/null 2>&1 ;;
    haproxy)
      local out
      out=$(printf 'set server be/blue weight %s; set server be/green weight %s\n' "$2" "$3" |
        timeout 10 socat -t 5 - "UNIX-CONNECT:$HA_SOCK" 2>&1) || return 1
      [[ -z ${out//[$'\n ']/} ]] ;;   # the runtime API answers nothing on success
    *) return 1 ;;
  esac
}

# sample PORT N -> number of "green" answers among N keep-alive requests
sample_green() {
  local urls=() i
  for ((i = 0; i < $2; i++)); do urls+=("http://$HOST:$1/"); done
  { timeout 20 curl -s --max-time 15 "${urls[@]}" || true; } | grep -c '^green$' || true
}

# ---------------------------------------------------------------- report --
echo "== switchyard load bench  $(date -u +%FT%TZ)"
echo "host:     $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binary:   $SWITCHYARD_BIN  (git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+dirty'))"
if [[ -n ${SWITCHYARD_BIN_B:-} ]]; then echo "binary B: $SWITCHYARD_BIN_B  (benched as switchyard-b)${SWITCHYARD_SERVER_B:+, [server] $SWITCHYARD_SERVER_B}"; fi
echo "tools:    $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}') | $(command -v nginx >/dev/null && nginx -v 2>&1 | sed 's/^nginx version: //') | haproxy $(command -v haproxy >/dev/null && haproxy -v 2>&1 | awk 'NR==1{print $3}')"
echo "origins:  $ORIGIN_KIND  blue :${PORT[blue]}  green :${PORT[green]}"
echo "proxies:  $(for t in "${TARGETS[@]}"; do printf '%s :%s  ' "$t" "$(lport "$t")"; done)($SCHEME, $CONNS connections; switchyard threads=$THREADS; ulimit -n $NOFILE_NOW${HA_MAXCONN:+; haproxy maxconn $HA_MAXCONN})"
echo "pinning:  origin + proxies cpu $SUT_CPU | wrk cpu $LOAD_CPU${PORT[shadow]:+ | mirror origin (pool shadow :${PORT[shadow]}) cpu $MIRROR_CPU}"

# ------------------------------------------------------------------ 1. load --
if ((LOAD)); then
  echo "load:     wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS interleaved rounds, ${WARMUP}s warm-up each"
  n=${#TARGETS[@]}
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < n; k++)); do
      t=${TARGETS[(k + r - 1) % n]}
      alive "${PID_OF[$t]}" || die "$t died (see $RUN_DIR/$t.log; KEEP=1 keeps it)"
      ((WARMUP)) && wrk_run "$WARMUP" "$(lport "$t")" "$RUN_DIR/warm.$t.$r.txt"
      read -r u0 s0 <<<"$(cpu_ticks "${PID_OF[$t]}")"
      wrk_run "$DURATION" "$(lport "$t")" "$RUN_DIR/wrk.$t.$r.txt"
      read -r u1 s1 <<<"$(cpu_ticks "${PID_OF[$t]}")"
      echo "$((u1 - u0)) $((s1 - s0))" >"$RUN_DIR/cpu.$t.$r.txt"
      read -r rps p50 p99 _ <<<"$(parse "$RUN_DIR/wrk.$t.$r.txt")"
      awk -v x="$rps" 'BEGIN{exit !(x > 0)}' || { cat "$RUN_DIR/wrk.$t.$r.txt" >&2; die "wrk against $t measured nothing"; }
      log "round $r/$ROUNDS: $t $rps req/s  p50 $p50 ms  p99 $p99 ms"
      ((PAUSE)) && sleep "$PAUSE"
    done
  done

  echo
  printf '%-14s %9s %19s %8s %8s %11s %9s %7s %17s\n' proxy 'req/s' '(min..max)' 'p50 ms' 'p99 ms' 'x haproxy' requests errors 'cpu us/req usr+sys'
  hz=$(getconf CLK_TCK)
  for t in "${TARGETS[@]}"; do
    rpss=() p50s=() p99s=() ratios=() reqs=0 errs=0 uticks=0 sticks=0
    for ((r = 1; r <= ROUNDS; r++)); do
      read -r rps p50 p99 req err <<<"$(parse "$RUN_DIR/wrk.$t.$r.txt")"
      read -r du ds <"$RUN_DIR/cpu.$t.$r.txt"
      uticks=$((uticks + du)); sticks=$((sticks + ds))
      rpss+=("$rps"); p50s+=("$p50"); p99s+=("$p99")
      reqs=$((reqs + req)); errs=$((errs + err))
      if has haproxy; then
        read -r hrps _ <<<"$(parse "$RUN_DIR/wrk.haproxy.$r.txt")"
        ratios+=("$(awk -v a="$rps" -v b="$hrps" 'BEGIN{printf "%.3f", (b > 0 ? a / b : 0)}')")
      fi
    done
    med=$(printf '%s\n' "${rpss[@]}" | median)
    lo=$(printf '%s\n' "${rpss[@]}" | sort -g | head -n1)
    hi=$(printf '%s\n' "${rpss[@]}" | sort -g | tail -n1)
    ratio="-"
    if has haproxy; then ratio=$(printf '%s\n' "${ratios[@]}" | median); ratio=$(printf '%.2fx' "$ratio"); fi
    cpu=$(awk -v u="$uticks" -v s="$sticks" -v n="$reqs" -v hz="$hz" \
      'BEGIN{ if (n > 0) printf "%.2f+%.2f", u / hz / n * 1e6, s / hz / n * 1e6; else printf "-" }')
    printf '%-14s %9.0f %19s %8.2f %8.2f %11s %9d %7d %17s\n' "$t" "$med" "($(printf '%.0f..%.0f' "$lo" "$hi"))" \
      "$(printf '%s\n' "${p50s[@]}" | median)" "$(printf '%s\n' "${p99s[@]}" | median)" "$ratio" "$reqs" "$errs" "$cpu"
  done
  echo "(x haproxy = median over rounds of req/s / HAProxy's req/s in the same round; errors = socket errors + non-2xx, all rounds;"
  echo " cpu = the proxy's own user+system CPU time per request over the measured runs, from /proc/PID/stat, children included)"
  if has switchyard-log; then
    ratios=()
    for ((r = 1; r <= ROUNDS; r++)); do
      read -r on _ <<<"$(parse "$RUN_DIR/wrk.switchyard-log.$r.txt")"
      read -r off _ <<<"$(parse "$RUN_DIR/wrk.switchyard.$r.txt")"
      ratios+=("$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", (b > 0 ? a / b : 0)}')")
    done
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    lines=$(wc -l <"$RUN_DIR/switchyard-log/access.log" 2>/dev/null || echo 0)
    dropped=$(timeout 10 curl -s "http://$HOST:${ADMIN_OF[switchyard-log]}/metrics" |
      awk '/^switchyard_access_log_dropped_total /{print $2}')
    verdict=$(awk -v x="$ratio" 'BEGIN{print (x >= 0.9 ? "ok, >= 0.90" : "BELOW 0.90")}')
    echo "access log: switchyard-log / switchyard req/s = $(printf '%.2fx' "$ratio") (median of per-round ratios: ${ratios[*]}; $verdict);"
    echo "            JSON lines written $lines, dropped ${dropped:-?} (switchyard_access_log_dropped_total)"
  fi
  if has switchyard-mirror; then
    ratios=() cpus=()
    for ((r = 1; r <= ROUNDS; r++)); do
      read -r on _ _ on_req _ <<<"$(parse "$RUN_DIR/wrk.switchyard-mirror.$r.txt")"
      read -r off _ _ off_req _ <<<"$(parse "$RUN_DIR/wrk.switchyard.$r.txt")"
      ratios+=("$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", (b > 0 ? a / b : 0)}')")
      read -r du ds <"$RUN_DIR/cpu.switchyard-mirror.$r.txt"; on_cpu=$((du + ds))
      read -r du ds <"$RUN_DIR/cpu.switchyard.$r.txt"; off_cpu=$((du + ds))
      cpus+=("$(awk -v a="$on_cpu" -v an="$on_req" -v b="$off_cpu" -v bn="$off_req" \
        'BEGIN{printf "%.3f", (an > 0 && bn > 0 && b > 0 ? (a / an) / (b / bn) : 0)}')")
    done
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    mirror_metrics=$(timeout 10 curl -s "http://$HOST:${ADMIN_OF[switchyard-mirror]}/metrics")
    answered=$(awk '/^switchyard_mirror_requests_total/ {s += $NF} END {printf "%d", s}' <<<"$mirror_metrics")
    dropped=$(awk '/^switchyard_mirror_dropped_total/ {s += $NF} END {printf "%d", s}' <<<"$mirror_metrics")
    verdict=$(awk -v x="$ratio" 'BEGIN{print (x >= 0.9 ? "ok, >= 0.90" : "BELOW 0.90")}')
    echo "mirror:     switchyard-mirror / switchyard req/s = $(printf '%.2fx' "$ratio") (median of per-round ratios: ${ratios[*]}; $verdict);"
    echo "            its CPU per request = $(printf '%.2fx' "$cpu") switchyard's (per round: ${cpus[*]});"
    if [[ -n ${PORT[shadow]:-} ]]; then where="the mirror origin on cpu $MIRROR_CPU served the copies"
    else where="the origin served both the requests and their copies"; fi
    echo "            copies answered $answered, dropped $dropped ($where)"
  fi
fi

# ------------------------------------------------------------ 2. live shift --
if ((LIVE)); then
  flips=$((LIVE_DURATION / SHIFT_INTERVAL))
  echo
  echo "live shift: wrk -c$CONNS -d${LIVE_DURATION}s while the split flips 90/10 <-> 0/100 every ${SHIFT_INTERVAL}s ($flips flips)"
  printf '%-12s %9s %9s %7s %13s %s\n' proxy 'req/s' requests errors 'failed shifts' 'check (0/100 -> green of 20)'
  for t in "${TARGETS[@]}"; do
    if [[ $t == nginx ]]; then
      printf '%-12s %s\n' nginx "skipped: nginx changes weights only by config reload"
      continue
    fi
    alive "${PID_OF[$t]}" || die "$t died (see $RUN_DIR/$t.log)"
    # check the shift does what it says before measuring under it
    check="shift failed"
    if shift_split "$t" 0 100; then
      sleep 0.2
      check="$(sample_green "${PORT[$t]}" 20)/20"
    fi
    shift_split "$t" "$W_BLUE" "$W_GREEN" || true
    log "live shift: $t"
    timeout -k 5 $((LIVE_DURATION + 30)) taskset -c "$LOAD_CPU" \
      wrk -t"$WRK_THREADS" -c"$CONNS" -d"$LIVE_DURATION"s --latency --timeout 5s "$SCHEME://$HOST:$(lport "$t")/" \
      >"$RUN_DIR/live.$t.txt" 2>&1 &
    BG_WRK=$!
    failed=0 state=0
    for ((f = 0; f < flips; f++)); do
      sleep "$SHIFT_INTERVAL"
      alive "$BG_WRK" || break
      if ((state == 0)); then shift_split "$t" 0 100 || failed=$((failed + 1)); state=1
      else shift_split "$t" "$W_BLUE" "$W_GREEN" || failed=$((failed + 1)); state=0; fi
    done
    wait "$BG_WRK" || true
    BG_WRK=""
    shift_split "$t" "$W_BLUE" "$W_GREEN" || true
    read -r rps _ _ req err <<<"$(parse "$RUN_DIR/live.$t.txt")"
    printf '%-12s %9.0f %9d %7d %13s %s\n' "$t" "$rps" "$req" "$err" "$failed/$f" "$check"
  done
fi

# ------------------------------------------------------ 3. idle connections --
if ((IDLE)); then
  echo
  echo "idle connections: $IDLE_CONNS keep-alive clients, one GET each, then idle ${IDLE_HOLD_SECS}s (benches/idle_conns.rs)"
  for t in "${TARGETS[@]}"; do
    alive "${PID_OF[$t]}" || die "$t died (see $RUN_DIR/$t.log)"
    pids=${PID_OF[$t]}
    if [[ $t == nginx ]]; then   # master + worker
      for c in $(pgrep -P "${PID_OF[$t]}" || true); do pids+=",$c"; done
    fi
    IDLE_ADDR=$HOST:$(lport "$t") IDLE_TLS=$([[ $SCHEME == https ]] && echo 1 || echo 0) IDLE_CA=$RUN_DIR/cert.pem IDLE_PID=$pids IDLE_CONNS=$IDLE_CONNS IDLE_BATCH=$IDLE_BATCH \
      IDLE_HOLD_SECS=$IDLE_HOLD_SECS IDLE_LABEL=$t \
      timeout -k 5 300 taskset -c "$LOAD_CPU" "$IDLE_BIN" || log "idle_conns against $t reported a failure"
    sleep 2
  done
fi
