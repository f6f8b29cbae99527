#!/usr/bin/env bash
# Benchmark of the public port: the real `aim-engine serve`, supervising the fake engine
# (tests/fake-engine), with the engine reached directly on its loopback port vs through our
# public port, side by side in one run, loopback only, bounded durations.
#
#   bench/http/run.sh                          # DUR=5s per wrk run, 200 SSE requests for TTFB
#   DUR=10s N_TTFB=500 RATE=2000 bench/http/run.sh
#
# Two engines are measured, one after the other:
#   A. a zero-cost engine (FAKE_TOKEN_DELAY_MS=0, GET /v1/models): the worst case for us,
#      where the proxy's own CPU is the whole story;
#   B. an engine that takes FAKE_TOKEN_DELAY_MS=2 per generated token (POST /v1/completions,
#      not streamed), i.e. bounded by generation time as a real engine is.
# Tools: wrk (Debian package, installed here if missing), curl, and examples/proxy_bench.rs
# (open-loop latency, which wrk cannot do). Prints markdown tables.
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${DUR:-5s}
N_TTFB=${N_TTFB:-200}
RATE=${RATE:-1000}
UP_PORT=${UP_PORT:-18101}
PX_PORT=${PX_PORT:-18100}
TARGET=${CARGO_TARGET_DIR:-target}
ROOT=tests/fixtures/sysfs/mi300x-8gpu-spx
MODEL=Qwen/Qwen3-32B

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
command -v curl >/dev/null || apt-get install -y curl >/dev/null

cargo build --release --workspace --bins >&2
cargo build --release --example proxy_bench >&2
AIM="$TARGET/release/aim-engine"
FAKE="$TARGET/release/fake-engine"
PB="$TARGET/release/examples/proxy_bench"
LOGS=$(mktemp -d)

serve_pid=
stop_serve() {
  if [[ -n "$serve_pid" ]]; then
    kill -TERM "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
  fi
}
trap 'stop_serve; rm -rf "$LOGS"' EXIT

start_serve() { # token delay in ms
  FAKE_LOAD_SECS=0 FAKE_TOKEN_DELAY_MS=$1 AIM_VLLM_COMMAND="$FAKE" \
    "$AIM" --root "$ROOT" serve "$MODEL" --download=false --port "$PX_PORT" --engine-port "$UP_PORT" \
    >"$LOGS/serve-$1.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 300); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PX_PORT/health/ready")" == 200 ]] && break
    sleep 0.1
  done
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PX_PORT/health/ready")" == 200 ]] ||
    { echo "serve did not get ready; log tail:" >&2; tail -20 "$LOGS/serve-$1.log" >&2; exit 1; }
  engine_pid=$(pgrep -P "$serve_pid" | head -1)
}

DIRECT="http://127.0.0.1:$UP_PORT"
PROXY="http://127.0.0.1:$PX_PORT"
# CPU time (user + system) of a process in microseconds.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000000 / hz}' "/proc/$1/stat"; }
# wrk's "Latency Distribution" prints e.g. " 99%  1.23ms"; normalise to microseconds.
to_us() { awk '{v=$1; m=1; if (v ~ /us$/) sub(/us/,"",v); else if (v ~ /ms$/) {sub(/ms/,"",v); m=1000} else if (v ~ /s$/) {sub(/s/,"",v); m=1000000}; printf "%.0f\n", v*m}'; }
wrk_run() { # conns url [wrk args...] -> "rps p50_us p99_us requests"
  local c=$1 url=$2 t=$(( $1 < 2 ? 1 : 2 )) out
  shift 2
  out=$(wrk -t"$t" -c"$c" -d"$DUR" --latency "$@" "$url")
  local rps p50 p99 n
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $p50 $p99 $n"
}
row() { # conns direct_line proxied_line
  local c=$1
  read -r drps dp50 dp99 _ <<<"$2"
  read -r prps pp50 pp99 _ <<<"$3"
  awk -v c="$c" -v dr="$drps" -v pr="$prps" -v a="$dp50" -v b="$dp99" -v x="$pp50" -v y="$pp99" \
    'BEGIN { printf "| %d | %.0f | %.0f | %.2fx | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f |\n", c, dr, pr, pr/dr, a, b, x, y, x-a, y-b }'
}
HEADER="| conns | direct req/s | proxied req/s | ratio | direct p50/p99 (us) | proxied p50/p99 (us) | added p50/p99 (us) |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"

echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo

# ---- A: zero-cost engine -------------------------------------------------------------
start_serve 0
echo "### A. Zero-cost engine, GET /v1/models (wrk, closed loop, $DUR each)"
echo
echo "$HEADER"
for c in 1 16 64; do
  d=$(wrk_run "$c" "$DIRECT/v1/models")
  a0=$(cpu_us "$serve_pid"); e0=$(cpu_us "$engine_pid")
  p=$(wrk_run "$c" "$PROXY/v1/models")
  a1=$(cpu_us "$serve_pid"); e1=$(cpu_us "$engine_pid")
  row "$c" "$d" "$p"
  [[ $c == 64 ]] && cpu_line=$(awk -v a="$((${a1%.*} - ${a0%.*}))" -v e="$((${e1%.*} - ${e0%.*}))" -v n="${p##* }" \
    'BEGIN { printf "CPU per proxied request at 64 connections: aim-engine %.1f us, engine %.1f us", a/n, e/n }')
done
echo
echo "$cpu_line"

echo
echo "Open loop, $RATE requests/s over 64 connections (proxy_bench latency, $DUR):"
echo
echo "| path | p50 (us) | p90 (us) | p99 (us) | p99.9 (us) | max (us) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
secs=${DUR%s}
read -r _ _ dl50 dl90 dl99 dl999 dlmax < <("$PB" latency --url "$DIRECT/v1/models" --rate "$RATE" --conns 64 --secs "$secs")
read -r _ _ pl50 pl90 pl99 pl999 plmax < <("$PB" latency --url "$PROXY/v1/models" --rate "$RATE" --conns 64 --secs "$secs")
echo "| direct | $dl50 | $dl90 | $dl99 | $dl999 | $dlmax |"
echo "| through us | $pl50 | $pl90 | $pl99 | $pl999 | $plmax |"
echo "| added | $((pl50 - dl50)) | $((pl90 - dl90)) | $((pl99 - dl99)) | $((pl999 - dl999)) | |"

ttfb() { # url -> p50 and p99 of time to first byte of an SSE completion, in us
  for _ in $(seq "$N_TTFB"); do
    curl -s -o /dev/null -w '%{time_starttransfer}\n' -H 'content-type: application/json' \
      -d "{\"model\":\"$MODEL\",\"prompt\":\"Hello\",\"max_tokens\":16,\"stream\": true}" "$1/v1/completions"
  done | sort -n | awk '{v[NR]=$1*1000000} END {printf "%.0f %.0f\n", v[int(NR*0.5)], v[int(NR*0.99)]}'
}
read -r dt50 dt99 < <(ttfb "$DIRECT")
read -r pt50 pt99 < <(ttfb "$PROXY")
echo
echo "| SSE time to first byte ($N_TTFB requests, curl) | p50 (us) | p99 (us) |"
echo "| --- | ---: | ---: |"
echo "| direct | $dt50 | $dt99 |"
echo "| through us | $pt50 | $pt99 |"
echo "| added | $((pt50 - dt50)) | $((pt99 - dt99)) |"

# Health while 64 connections of API traffic saturate the proxy (wrk, keep-alive probe) and
# with a new connection per probe (curl, as Docker and Kubernetes probes connect).
wrk -t2 -c64 -d"$DUR" "$PROXY/v1/models" >/dev/null & sat=$!
sleep 0.5
hout=$(wrk -t1 -c1 -d2s --latency "$PROXY/health")
read -r hc50 hc99 < <(for _ in $(seq 100); do curl -s -o /dev/null -w '%{time_total}\n' "$PROXY/health"; done |
  sort -n | awk '{v[NR]=$1*1000000} END {printf "%.0f %.0f\n", v[int(NR*0.5)], v[int(NR*0.99)]}')
rss_load=$(awk '/^VmRSS/ {print $2}' "/proc/$serve_pid/status")
wait "$sat"
rss_peak=$(awk '/^VmHWM/ {print $2}' "/proc/$serve_pid/status")
hp50=$(awk '$1=="50%" {print $2}' <<<"$hout" | to_us)
hp99=$(awk '$1=="99%" {print $2}' <<<"$hout" | to_us)
echo
echo "| /health while 64 connections saturate the proxy | p50 (us) | p99 (us) |"
echo "| --- | ---: | ---: |"
echo "| keep-alive probe (wrk, 2 s) | $hp50 | $hp99 |"
echo "| new connection per probe (curl, 100) | $hc50 | $hc99 |"
echo
echo "aim-engine memory while proxying 64 connections: VmRSS $rss_load kB (peak VmHWM over the whole run $rss_peak kB)"
stop_serve

# ---- B: generation-bound engine --------------------------------------------------------
start_serve 2
cat >"$LOGS/completion.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "$MODEL", "prompt": "Hello", "max_tokens": 16}'
EOF
echo
echo "### B. Engine taking 2 ms per token, POST /v1/completions (not streamed; wrk, $DUR each)"
echo
echo "$HEADER"
for c in 1 16 64; do
  d=$(wrk_run "$c" "$DIRECT/v1/completions" -s "$LOGS/completion.lua")
  p=$(wrk_run "$c" "$PROXY/v1/completions" -s "$LOGS/completion.lua")
  row "$c" "$d" "$p"
done
stop_serve
