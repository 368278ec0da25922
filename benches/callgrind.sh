#!/usr/bin/env bash
# benches/callgrind.sh -- instructions per proxied request, under callgrind.
#
# Repeatable where req/s is not: runs the release binary under
# `valgrind --tool=callgrind`, warms it up, zeroes the counters, sends REQS
# requests through it with curl --parallel (CONNS at a time, keep-alive),
# dumps the counters, and divides the instructions (Ir) of that
# interval by the number of requests the proxy itself counted
# (sum of switchyard_requests_total on /metrics, before vs after).
#
#   SWITCHYARD_BIN=/path/to/switchyard benches/callgrind.sh
#   REQS [5000]  CONNS [16]  WARM [300]  TOP [25] functions shown
#   OUT [a temp dir]: where callgrind.out.* and the annotate output stay
#   SERVER_EXTRA [none]: extra [server] lines, e.g. 'fast_path = false' to
#     profile pingora's HTTP path
#   SECTIONS_EXTRA [none]: extra sections at the end of the config, e.g.
#     SECTIONS_EXTRA=$'[mirror]\npool = "green"\npercent = 100' to count the
#     mirror's cost (its worker thread included: the dump waits, bounded,
#     until every copy of the measured requests was answered or dropped)
#
# Origin: nginx (1 worker) answering "blue"/"green" on free loopback ports.
# switchyard: threads=1, split 90/10, health checks off (their timer would
# add work unrelated to requests). Every process started here is stopped on
# exit; every wait is bounded; loopback only.

set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
REQS=${REQS:-5000}
CONNS=${CONNS:-16}
WARM=${WARM:-300}
TOP=${TOP:-25}
HOST=127.0.0.1
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
for tool in valgrind callgrind_control python3 nginx curl ss; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
[[ -x ${SWITCHYARD_BIN:-} ]] || die "set SWITCHYARD_BIN to the release binary"

RUN_DIR=$(mktemp -d /tmp/switchyard-cg.XXXXXX)
chmod 755 "$RUN_DIR"
OUT=${OUT:-$RUN_DIR}
mkdir -p "$OUT"
declare -a PIDS=()
cleanup() {
  local rc=$? p i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill -TERM "$p" 2>/dev/null || true
    for ((j = 0; j < 100; j++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [[ $OUT == "$RUN_DIR" ]] || rm -rf "$RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local i p
  for ((i = 0; i < 200; i++)); do
    p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))   # below the ephemeral range
    [[ " ${USED:-} " == *" $p "* ]] && continue
    ss -Htan "sport = :$p" 2>/dev/null | grep -q . || { USED="${USED:-} $p"; echo "$p"; return 0; }
  done
  die "no free port"
}
wait_port() { local i; for ((i = 0; i < $2 * 10; i++)); do listening "$1" && return 0; sleep 0.1; done; return 1; }

BLUE=$(free_port); GREEN=$(free_port); PROXY=$(free_port); ADMIN=$(free_port)
mkdir -p "$RUN_DIR/origin/tmp" "$RUN_DIR/sy/state"
cat >"$RUN_DIR/origin/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN_DIR/origin/nginx.pid;
error_log $RUN_DIR/origin/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $RUN_DIR/origin/tmp/body;
  proxy_temp_path $RUN_DIR/origin/tmp/proxy;
  fastcgi_temp_path $RUN_DIR/origin/tmp/fastcgi;
  uwsgi_temp_path $RUN_DIR/origin/tmp/uwsgi;
  scgi_temp_path $RUN_DIR/origin/tmp/scgi;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  server { listen $HOST:$BLUE;  location / { return 200 "blue\n"; } }
  server { listen $HOST:$GREEN; location / { return 200 "green\n"; } }
}
EOF
nginx -p "$RUN_DIR/origin/" -c "$RUN_DIR/origin/nginx.conf" -e "$RUN_DIR/origin/error.log" >"$RUN_DIR/origin.log" 2>&1 &
PIDS+=("$!")
wait_port "$BLUE" 10 && wait_port "$GREEN" 10 || die "origin did not start"

cat >"$RUN_DIR/sy/switchyard.toml" <<EOF
[server]
listen = ["$HOST:$PROXY"]
threads = 1
grace_period = "1s"
read_timeout = "600s"
write_timeout = "600s"
${SERVER_EXTRA:-}
[admin]
socket = "$RUN_DIR/sy/admin.sock"
http = "$HOST:$ADMIN"
state_dir = "$RUN_DIR/sy/state"
[pools.blue]
backends = ["$HOST:$BLUE"]
[pools.green]
backends = ["$HOST:$GREEN"]
[split]
blue = 90
green = 10
[health]
enabled = false
${SECTIONS_EXTRA:-}
EOF
"$SWITCHYARD_BIN" check -c "$RUN_DIR/sy/switchyard.toml" >/dev/null || die "config rejected"

env RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
  "$SWITCHYARD_BIN" run -c "$RUN_DIR/sy/switchyard.toml" >"$RUN_DIR/sy.log" 2>&1 &
VG=$!
PIDS+=("$VG")
wait_port "$PROXY" 120 || { tail -n 30 "$RUN_DIR/sy.log" >&2; die "switchyard under valgrind did not listen"; }

count() {  # requests the proxy has counted so far
  timeout 60 curl -s --max-time 50 "http://$HOST:$ADMIN/metrics" |
    awk '/^switchyard_requests_total/ {s += $NF} END {printf "%d\n", s}'
}
load() {  # load N: exactly N keep-alive GETs, CONNS at a time (curl --parallel)
  local i
  for ((i = 0; i < $1; i++)); do echo "url = \"http://$HOST:$PROXY/\""; echo 'output = "/dev/null"'; done >"$RUN_DIR/urls.$1"
  timeout 1800 curl -s -Z --parallel-max "$CONNS" -w '%{http_code}\n' -K "$RUN_DIR/urls.$1" >"$RUN_DIR/codes.$1" 2>"$RUN_DIR/curl.err" \
    || die "curl failed or timed out"
}
log "warm-up: $WARM requests"
load "$WARM"
before=$(count)
timeout 60 callgrind_control -z "$VG" >/dev/null || die "callgrind_control -z failed"
mirrored() {  # copies the mirror has answered or dropped so far
  timeout 60 curl -s --max-time 50 "http://$HOST:$ADMIN/metrics" |
    awk '/^switchyard_mirror_(requests|dropped)_total/ {s += $NF} END {printf "%d\n", s}'
}
copies_before=$(mirrored)
log "measuring: $REQS requests, -c$CONNS"
load "$REQS"
if [[ ${SECTIONS_EXTRA:-} == *'[mirror]'* ]]; then
  for ((i = 0; i < 240; i++)); do
    (( $(mirrored) - copies_before >= REQS )) && break
    sleep 0.5
  done
  log "mirror: $(( $(mirrored) - copies_before )) copies answered or dropped"
fi
timeout 60 callgrind_control -d "$VG" >/dev/null || die "callgrind_control -d failed"
after=$(count)
reqs=$((after - before))
dump=$(ls -t "$OUT"/callgrind.out.*.* 2>/dev/null | head -n1)
[[ -n $dump ]] || die "no callgrind dump"
ir=$(awk '/^summary:/ {print $2}' "$dump")
[[ -n $ir ]] || ir=$(awk '/^totals:/ {print $2}' "$dump")
codes=$(sort "$RUN_DIR/codes.$REQS" | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')
echo "binary:        $SWITCHYARD_BIN"
echo "requests:      $reqs counted by the proxy (curl -Z --parallel-max $CONNS, $REQS requests; status codes: $codes)"
echo "instructions:  $ir in the measured interval (all threads)"
echo "per request:   $(awk -v a="$ir" -v b="$reqs" 'BEGIN{printf "%.0f", (b > 0 ? a / b : 0)}') instructions"
echo "top functions by self instructions (benches/cg_self.py $dump):"
python3 "$(dirname "${BASH_SOURCE[0]}")/cg_self.py" "$dump" "$TOP" "$reqs" | tee "$OUT/self.txt"
