#!/usr/bin/env bash
# Benchmark of the public port: an engine stand-in reached directly vs through aim-engine's
# proxy (http::serve_public), side by side in one run, loopback only, bounded durations.
#
#   bench/http/run.sh                 # DUR=5s per wrk run, 200 SSE requests for TTFB
#   DUR=10s N_TTFB=500 bench/http/run.sh
#
# Tools: wrk (Debian package, installed here if missing) and curl. The upstream is
# `examples/proxy_bench.rs upstream` (a minimal vLLM-shaped server); set UPSTREAM_CMD to use
# another one that listens on $UP_PORT (e.g. the fake engine from tests/fake-engine).
set -euo pipefail
cd "$(dirname "$0")/../.."

DUR=${DUR:-5s}
N_TTFB=${N_TTFB:-200}
UP_PORT=${UP_PORT:-18101}
PX_PORT=${PX_PORT:-18100}
TARGET=${CARGO_TARGET_DIR:-target}

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
command -v curl >/dev/null || apt-get install -y curl >/dev/null

# BIN=path skips the build (a proxy_bench built earlier from the same sources).
if [[ -z "${BIN:-}" ]]; then
  cargo build --release --example proxy_bench >&2
  BIN="$TARGET/release/examples/proxy_bench"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [[ -n "${UPSTREAM_CMD:-}" ]]; then
  bash -c "$UPSTREAM_CMD" & pids+=($!)
else
  "$BIN" upstream --listen "$UP_PORT" --tokens 16 & pids+=($!)
fi
"$BIN" proxy --listen "$PX_PORT" --engine-port "$UP_PORT" & pids+=($!)
for port in "$UP_PORT" "$PX_PORT"; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/v1/models" && break; sleep 0.1; done
done

DIRECT="http://127.0.0.1:$UP_PORT"
PROXY="http://127.0.0.1:$PX_PORT"

# wrk's "Latency Distribution" prints e.g. " 99%  1.23ms"; normalise to microseconds.
to_us() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} else print v}'; }
wrk_run() { # conns url -> "rps p50_us p99_us"
  local c=$1 url=$2 t=$(( $1 < 2 ? 1 : 2 )) out
  out=$(wrk -t"$t" -c"$c" -d"$DUR" --latency "$url")
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_us)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_us)
  echo "$rps $p50 $p99"
}

echo "| conns | direct req/s | proxied req/s | ratio | direct p50/p99 (us) | proxied p50/p99 (us) | added p50/p99 (us) |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for c in 1 16 64; do
  read -r drps dp50 dp99 < <(wrk_run "$c" "$DIRECT/v1/models")
  read -r prps pp50 pp99 < <(wrk_run "$c" "$PROXY/v1/models")
  awk -v c="$c" -v dr="$drps" -v pr="$prps" -v a="$dp50" -v b="$dp99" -v x="$pp50" -v y="$pp99" \
    'BEGIN { printf "| %d | %.0f | %.0f | %.2fx | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f |\n", c, dr, pr, pr/dr, a, b, x, y, x-a, y-b }'
done

ttfb() { # url -> p50 and p99 of time to first byte of an SSE completion, in us
  for _ in $(seq "$N_TTFB"); do
    curl -s -o /dev/null -w '%{time_starttransfer}\n' -H 'content-type: application/json' \
      -d '{"model":"bench/model","prompt":"Hello","max_tokens":16,"stream": true}' "$1/v1/completions"
  done | sort -n | awk '{v[NR]=$1*1000000} END {printf "%.0f %.0f\n", v[int(NR*0.5)], v[int(NR*0.99)]}'
}
read -r dt50 dt99 < <(ttfb "$DIRECT")
read -r pt50 pt99 < <(ttfb "$PROXY")
echo
echo "| SSE time to first byte ($N_TTFB requests, curl) | p50 (us) | p99 (us) |"
echo "| --- | ---: | ---: |"
echo "| direct | $dt50 | $dt99 |"
echo "| through the proxy | $pt50 | $pt99 |"
echo "| added | $((pt50 - dt50)) | $((pt99 - dt99)) |"

# Health while the proxy is saturated by 64 connections of API traffic.
wrk -t2 -c64 -d"$DUR" "$PROXY/v1/models" >/dev/null & sat=$!
sleep 0.5
hout=$(wrk -t1 -c1 -d3s --latency "$PROXY/health")
wait "$sat"
hp50=$(awk '$1=="50%" {print $2}' <<<"$hout" | to_us)
hp99=$(awk '$1=="99%" {print $2}' <<<"$hout" | to_us)
echo
echo "| /health while 64 connections saturate the proxy | p50 (us) | p99 (us) |"
echo "| --- | ---: | ---: |"
echo "| through the proxy | $hp50 | $hp99 |"
