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
#   SCHEME [http]: https = TLS 1.3 keep-alive HTTP/1.1 (self-signed ECDSA
#     P-256 certificate made here with openssl; curl --http1.1, so ALPN
#     http/1.1); the handshakes of the CONNS connections are amortised over
#     REQS requests
#   PEER [switchyard]: haproxy = run HAProxy (nbthread 1, the same origins,
#     split, keep-alive and TLS settings) under callgrind instead; its
#     requests are the ones curl sent (it has no /metrics)
#   CLIENT [curl for http, h2load for https]: h2load --h1 keeps exactly
#     CONNS connections (curl -Z opens more than CONNS over TLS, and each
#     extra handshake lands in the figure)
#   POST_BYTES [0]: send POSTs with a body of this many bytes instead of GETs
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
SCHEME=${SCHEME:-http}
PEER=${PEER:-switchyard}
POST_BYTES=${POST_BYTES:-0}
for tool in valgrind callgrind_control python3 nginx curl ss openssl; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ $PEER == haproxy ]]; then
  command -v haproxy >/dev/null || die "haproxy is required for PEER=haproxy"
else
  [[ -x ${SWITCHYARD_BIN:-} ]] || die "set SWITCHYARD_BIN to the release binary"
fi

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

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$RUN_DIR/key.pem" -out "$RUN_DIR/cert.pem" >/dev/null 2>&1 \
  || die "openssl could not make a certificate"
cat "$RUN_DIR/cert.pem" "$RUN_DIR/key.pem" >"$RUN_DIR/haproxy.pem"
if [[ $SCHEME == https ]]; then
  LISTEN_PLAIN=$(free_port)
  SY_TLS="[[server.tls]]
listen = \"$HOST:$PROXY\"
cert = \"$RUN_DIR/cert.pem\"
key = \"$RUN_DIR/key.pem\""
  HA_BIND="bind $HOST:$PROXY ssl crt $RUN_DIR/haproxy.pem alpn h2,http/1.1"
else
  LISTEN_PLAIN=$PROXY
  SY_TLS=""
  HA_BIND="bind $HOST:$PROXY"
fi
cat >"$RUN_DIR/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
  option http-keep-alive
frontend fe
  $HA_BIND
  default_backend split
backend split
  balance random
  http-reuse always
  server blue $HOST:$BLUE weight 90
  server green $HOST:$GREEN weight 10
EOF
cat >"$RUN_DIR/sy/switchyard.toml" <<EOF
[server]
listen = ["$HOST:$LISTEN_PLAIN"]
threads = 1
grace_period = "1s"
read_timeout = "600s"
write_timeout = "600s"
${SERVER_EXTRA:-}
$SY_TLS
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
if [[ $PEER == haproxy ]]; then
  haproxy -c -f "$RUN_DIR/haproxy.cfg" >/dev/null || die "haproxy config rejected"
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
    haproxy -db -f "$RUN_DIR/haproxy.cfg" >"$RUN_DIR/sy.log" 2>&1 &
else
  "$SWITCHYARD_BIN" check -c "$RUN_DIR/sy/switchyard.toml" >/dev/null || die "config rejected"
  env RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out.%p" \
    "$SWITCHYARD_BIN" run -c "$RUN_DIR/sy/switchyard.toml" >"$RUN_DIR/sy.log" 2>&1 &
fi
VG=$!
PIDS+=("$VG")
wait_port "$PROXY" 120 || { tail -n 30 "$RUN_DIR/sy.log" >&2; die "switchyard under valgrind did not listen"; }

count() {  # requests the proxy has counted so far (HAProxy: those curl sent)
  if [[ $PEER == haproxy ]]; then echo "${SENT:-0}"; return; fi
  timeout 60 curl -s --max-time 50 "http://$HOST:$ADMIN/metrics" |
    awk '/^switchyard_requests_total/ {s += $NF} END {printf "%d\n", s}'
}
if [[ $SCHEME == https ]]; then CLIENT=${CLIENT:-h2load}; else CLIENT=${CLIENT:-curl}; fi
load() {  # load N: exactly N keep-alive GETs, CONNS at a time (curl --parallel, or h2load --h1)
  local i
  local extra=()
  if [[ $CLIENT == h2load ]]; then
    command -v h2load >/dev/null || die "h2load is required (nghttp2-client)"
    [[ $POST_BYTES -gt 0 ]] && extra+=(-d "$RUN_DIR/post.bin")
    timeout 1800 h2load --h1 -n "$1" -c "$CONNS" "${extra[@]}" "$SCHEME://$HOST:$PROXY/" >"$RUN_DIR/h2load.$1" 2>&1 \
      || die "h2load failed or timed out: $(tail -n 5 "$RUN_DIR/h2load.$1")"
    awk '/^status codes:/ {print "200 x" $3}' "$RUN_DIR/h2load.$1" | tr -d , >"$RUN_DIR/codes.$1"
    SENT=$((${SENT:-0} + $1))
    return
  fi
  for ((i = 0; i < $1; i++)); do echo "url = \"$SCHEME://localhost:$PROXY/\""; echo 'output = "/dev/null"'; done >"$RUN_DIR/urls.$1"
  [[ $SCHEME == https ]] && extra+=(-k --http1.1)
  [[ $POST_BYTES -gt 0 ]] && extra+=(--data-binary "@$RUN_DIR/post.bin" -H 'Content-Type: application/octet-stream')
  timeout 1800 curl -s -Z --parallel-max "$CONNS" --resolve "localhost:$PROXY:$HOST" "${extra[@]}" \
    -w '%{http_code}\n' -K "$RUN_DIR/urls.$1" >"$RUN_DIR/codes.$1" 2>"$RUN_DIR/curl.err" \
    || die "curl failed or timed out"
  SENT=$((${SENT:-0} + $1))
}
if [[ $POST_BYTES -gt 0 ]]; then head -c "$POST_BYTES" /dev/zero | tr '\0' x >"$RUN_DIR/post.bin"; fi
log "warm-up: $WARM requests"
load "$WARM"
mirrored() {  # copies the mirror has answered or dropped so far
  timeout 60 curl -s --max-time 50 "http://$HOST:$ADMIN/metrics" |
    awk '/^switchyard_mirror_(requests|dropped)_total/ {s += $NF} END {printf "%d\n", s}'
}
# The warm-up's copies settle first, and the count is read before the
# counters are zeroed (a /metrics answer is not a request's cost).
if [[ ${SECTIONS_EXTRA:-} == *'[mirror]'* ]]; then
  for ((i = 0; i < 240; i++)); do (( $(mirrored) >= WARM )) && break; sleep 0.5; done
fi
copies_before=$(mirrored)
before=$(count)
timeout 60 callgrind_control -z "$VG" >/dev/null || die "callgrind_control -z failed"
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
if [[ $CLIENT == h2load ]]; then
  codes="2xx $(awk '/^status codes:/ {print $3}' "$RUN_DIR/h2load.$REQS" | tr -d ,) (h2load --h1 -c$CONNS)"
else
  codes=$(sort "$RUN_DIR/codes.$REQS" | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')
fi
if [[ $PEER == haproxy ]]; then bin=$(haproxy -v | head -n1); else bin=$SWITCHYARD_BIN; fi
echo "binary:        $bin ($SCHEME${SERVER_EXTRA:+, $SERVER_EXTRA}$( ((POST_BYTES > 0)) && echo ", POST $POST_BYTES B"))"
echo "requests:      $reqs counted by the proxy (curl -Z --parallel-max $CONNS, $REQS requests; status codes: $codes)"
echo "instructions:  $ir in the measured interval (all threads)"
echo "per request:   $(awk -v a="$ir" -v b="$reqs" 'BEGIN{printf "%.0f", (b > 0 ? a / b : 0)}') instructions"
echo "top functions by self instructions (benches/cg_self.py $dump):"
python3 "$(dirname "${BASH_SOURCE[0]}")/cg_self.py" "$dump" "$TOP" "$reqs" | tee "$OUT/self.txt"
