#!/usr/bin/env bash
# aim-engine's public port next to nginx, both in front of the same fake engine, in one run
# (issue 18, item 1). Loopback only, bounded durations.
#
#   bench/http/nginx.sh                      # ROUNDS=3 rounds of DUR=10s per target, 64 conns
#   ROUNDS=5 DUR=5s CONNS=64 PSS_RUNS=3 bench/http/nginx.sh
#
# - `aim-engine serve` on the 8x MI300X fixture starts the fake engine itself
#   (AIM_VLLM_COMMAND, FAKE_LOAD_SECS=0, FAKE_TOKEN_DELAY_MS=0) on ENGINE_PORT;
# - nginx (Debian package) with 1 worker process and an upstream keep-alive pool
#   (keepalive 64, HTTP/1.1, Connection ""), access_log off, proxies to the same ENGINE_PORT;
# - wrk (-t2 -c$CONNS -d$DUR, GET /v1/models) hits, in each round and in this order, the engine
#   directly, nginx, and aim-engine.
# Per proxy: CPU per forwarded request (utime+stime from /proc/<pid>/stat before/after the
# proxy's wrk run, divided by the requests wrk reports; nginx = master + worker, aim-engine =
# its own pid only, not the engine's), req/s, p99, the engine's CPU per request meanwhile, and
# the ratios aim-engine / nginx; one row per round, then the median of the rounds.
# Before that: the idle PSS of `serve` (smaps_rollup, 1 s after /health/ready), PSS_RUNS
# fresh starts, median. Every process started here is stopped on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${DUR:-10s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
PSS_RUNS=${PSS_RUNS:-3}
AIM_PORT=${AIM_PORT:-18200}
ENGINE_PORT=${ENGINE_PORT:-18201}
NGINX_PORT=${NGINX_PORT:-18202}
TARGET=${CARGO_TARGET_DIR:-target}
ROOT=tests/fixtures/sysfs/mi300x-8gpu-spx
MODEL=Qwen/Qwen3-32B

need() { command -v "$1" >/dev/null || [[ -x /usr/sbin/$1 ]] || { apt-get install -y "$2" >/dev/null 2>&1 ||
  { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }; }; }
need wrk wrk
need nginx nginx
need curl curl
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ "${BUILD:-1}" == 1 ]]; then
  cargo build --release --bin aim-engine >&2
  cargo build --release -p fake-engine --bin fake-engine >&2
fi
AIM="$TARGET/release/aim-engine"
FAKE="$(cd "$(dirname "$TARGET/release/fake-engine")" && pwd)/fake-engine"
WORK=$(mktemp -d)

serve_pid=
nginx_pid=
stop_serve() {
  if [[ -n "$serve_pid" ]]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
  fi
}
stop_nginx() {
  if [[ -n "$nginx_pid" ]]; then
    kill -QUIT "$nginx_pid" 2>/dev/null || true   # graceful: the master stops its worker
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=
  fi
}
cleanup() { stop_nginx; stop_serve; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

start_serve() {
  FAKE_LOAD_SECS=0 FAKE_TOKEN_DELAY_MS=0 AIM_VLLM_COMMAND="$FAKE" \
    "$AIM" serve --root "$ROOT" "$MODEL" --download=false \
    --port "$AIM_PORT" --engine-port "$ENGINE_PORT" >"$WORK/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AIM_PORT/health/ready")" == 200 ]] && break
    sleep 0.1
  done
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$AIM_PORT/health/ready")" == 200 ]] ||
    { echo "serve did not get ready; log tail:" >&2; tail -20 "$WORK/serve.log" >&2; exit 1; }
  engine_pid=$(pgrep -P "$serve_pid" | head -1)
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), aim-engine $(stat -c %s "$AIM") bytes"
echo

# ---- idle PSS of serve -----------------------------------------------------------------
echo "### Idle memory of \`serve\` (1 s after /health/ready, $PSS_RUNS fresh starts)"
echo
echo "| run | PSS kB | VmRSS kB | load average |"
echo "| ---: | ---: | ---: | --- |"
: >"$WORK/pss"
for i in $(seq "$PSS_RUNS"); do
  start_serve
  sleep 1
  pss=$(awk '/^Pss:/ {print $2}' "/proc/$serve_pid/smaps_rollup")
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$serve_pid/status")
  echo "$pss" >>"$WORK/pss"
  echo "| $i | $pss | $rss | $(load) |"
  stop_serve
  sleep 0.3
done
echo
echo "Median idle PSS: $(median <"$WORK/pss") kB"
echo

# ---- throughput and CPU per request ------------------------------------------------------
start_serve
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  upstream engine {
    server 127.0.0.1:$ENGINE_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
nginx_pid=$!
for _ in $(seq 100); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/v1/models")" == 200 ]] && break
  sleep 0.1
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/v1/models")" == 200 ]] ||
  { echo "nginx does not answer; error log:" >&2; tail -20 "$WORK/nginx/error.log" >&2; exit 1; }
nginx_worker=$(pgrep -P "$nginx_pid" | head -1)

# CPU time (user + system) of the given pids together, in microseconds.
cpu_us() { for p in "$@"; do cat "/proc/$p/stat"; done |
  awk -v hz="$(getconf CLK_TCK)" '{ s += $14 + $15 } END { printf "%.0f\n", s * 1000000 / hz }'; }
to_us() { awk '{v=$1; m=1; if (v ~ /us$/) sub(/us/,"",v); else if (v ~ /ms$/) {sub(/ms/,"",v); m=1000} else if (v ~ /s$/) {sub(/s/,"",v); m=1000000}; printf "%.0f\n", v*m}'; }
# wrk_cpu url pids... -> "rps p99_us requests proxy_cpu_us_per_req engine_cpu_us_per_req errors"
wrk_cpu() {
  local url=$1 out p0 p1 e0 e1
  shift
  p0=$( (($#)) && cpu_us "$@" || echo 0); e0=$(cpu_us "$engine_pid")
  out=$(wrk -t2 -c"$CONNS" -d"$DUR" --latency "$url")
  p1=$( (($#)) && cpu_us "$@" || echo 0); e1=$(cpu_us "$engine_pid")
  local rps p99 n err
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  err=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
  awk -v rps="$rps" -v p99="$p99" -v n="$n" -v p="$((p1 - p0))" -v e="$((e1 - e0))" -v err="${err:--}" \
    'BEGIN { printf "%.0f %d %d %.1f %.1f %s\n", rps, p99, n, p/n, e/n, (err == "-" ? "-" : "ERR") }'
  [[ -z "$err" ]] || echo "wrk $url: $err" >&2
}

echo "### nginx vs aim-engine in front of the same zero-cost engine, GET /v1/models (wrk -t2 -c$CONNS -d$DUR, $ROUNDS rounds)"
echo
echo "| round | load average | target | req/s | p99 (us) | requests | proxy CPU/req (us) | engine CPU/req (us) |"
echo "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"
for r in $(seq "$ROUNDS"); do
  la=$(load)
  for t in direct nginx aim-engine; do
    case $t in
      direct) line=$(wrk_cpu "http://127.0.0.1:$ENGINE_PORT/v1/models") ;;
      nginx) line=$(wrk_cpu "http://127.0.0.1:$NGINX_PORT/v1/models" "$nginx_pid" "$nginx_worker") ;;
      aim-engine) line=$(wrk_cpu "http://127.0.0.1:$AIM_PORT/v1/models" "$serve_pid") ;;
    esac
    read -r rps p99 n pc ec _ <<<"$line"
    echo "$r $t $rps $p99 $n $pc $ec" >>"$WORK/rows"
    [[ $t == direct ]] && pc=-
    echo "| $r | $la | $t | $rps | $p99 | $n | $pc | $ec |"
  done
done
echo
med() { awk -v t="$1" -v c="$2" '$2==t {print $c}' "$WORK/rows" | median; }
echo "Median of $ROUNDS rounds:"
echo
echo "| target | req/s | p99 (us) | proxy CPU/req (us) | engine CPU/req (us) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for t in direct nginx aim-engine; do
  pc=$(med "$t" 6); [[ $t == direct ]] && pc=-
  echo "| $t | $(med "$t" 3) | $(med "$t" 4) | $pc | $(med "$t" 7) |"
done
echo
awk -v ar="$(med aim-engine 3)" -v nr="$(med nginx 3)" -v ap="$(med aim-engine 4)" -v np="$(med nginx 4)" \
  -v ac="$(med aim-engine 6)" -v nc="$(med nginx 6)" \
  'BEGIN { printf "aim-engine / nginx (medians): CPU per request %.2fx, req/s %.2fx, p99 %.2fx\n", ac/nc, ar/nr, ap/np }'
echo "Load average at the end: $(load)"
