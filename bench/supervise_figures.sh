#!/bin/sh
# Supervisor figures (issue 3): start->engine exec, crash->next spawn (zero backoff),
# SIGTERM->exit, and RSS while the engine runs. Uses the release binary.
#   cargo build --release && bench/supervise_figures.sh [ROOT]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${AIM_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/aim-engine}
root=${1:-$here/tests/fixtures/sysfs/mi300x-8gpu-spx}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rustc -O -o "$work/stamp" "$here/bench/stamp.rs"
export HF_HOME="$work/hf" HF_HUB_OFFLINE=1 AIM_LOG_LEVEL=warn
model=aim-test/Tiny-7B
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + $$ % 20000)); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== start -> engine exec, SIGTERM -> exit, RSS (10 runs)"
: > "$work/start_ms"; : > "$work/stop_ms"; : > "$work/rss"
for i in 1 2 3 4 5 6 7 8 9 10; do
  rm -f "$work/sup" "$work/eng"
  AIM_VLLM_COMMAND="$work/stamp $work/eng wait" AIM_SGLANG_COMMAND="$work/stamp $work/eng wait" \
    "$work/stamp" "$work/sup" exec "$bin" --root "$root" $model --host 127.0.0.1 \
    --port "$(port)" --engine-port "$(port)" >/dev/null 2>"$work/err" &
  pid=$!
  while [ ! -s "$work/eng" ]; do sleep 0.01; done
  sleep 0.3
  awk '/VmRSS/ {print $2}' "/proc/$pid/status" >> "$work/rss"
  echo $(( ($(cat "$work/eng") - $(cat "$work/sup")) / 1000 )) >> "$work/start_ms"
  t0=$(date +%s%N); kill -TERM $pid; wait $pid || true; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000 )) >> "$work/stop_ms"
done
echo "start -> engine exec: median $(median < "$work/start_ms") us (all: $(tr '\n' ' ' < "$work/start_ms"))"
echo "SIGTERM -> exit (incl. date+wait in this shell): median $(median < "$work/stop_ms") us (all: $(tr '\n' ' ' < "$work/stop_ms"))"
echo "VmRSS while the engine runs: median $(median < "$work/rss") kB"

echo "== crash -> next spawn, zero backoff"
rm -f "$work/eng"
AIM_VLLM_COMMAND="$work/stamp $work/eng exit 1" AIM_SGLANG_COMMAND="$work/stamp $work/eng exit 1" \
  "$bin" --root "$root" $model --host 127.0.0.1 --port "$(port)" --engine-port "$(port)" \
  --backoff-initial 0 --backoff-max 0 --restart-budget 30 >/dev/null 2>&1 || true
awk 'NR>1 {print int(($1-p)/1000)} {p=$1}' "$work/eng" > "$work/gaps"
echo "crash -> next spawn: median $(median < "$work/gaps") us over $(wc -l < "$work/gaps") restarts (all: $(tr '\n' ' ' < "$work/gaps"))"
