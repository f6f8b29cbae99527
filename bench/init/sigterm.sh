#!/usr/bin/env bash
# SIGTERM to exit, one init at a time, as PID 1 of a fresh PID namespace, with the workload of
# run.sh idle (it dies of the TERM at once). A quicker, paired look at run.sh's section 3.
#   sudo bench/init/sigterm.sh            # N=20 stops each of tini and aim-engine, medians
# Env: AIM_BIN (default target/release/aim-engine), N.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${AIM_BIN:-$here/target/release/aim-engine}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/load" "$here/bench/init/workload.c"
export HF_HOME=$work/hf HF_HUB_OFFLINE=1 AIM_LOG_LEVEL=warn AIM_VLLM_COMMAND=$work/load
export FAKE_INITLOAD_MODE=idle FAKE_INITLOAD_READY=$work/ready
stops() {
  for _ in $(seq "${N:-20}"); do
    rm -f "$work/ready"
    unshare --pid --fork --mount-proc "$@" >/dev/null 2>"$work/err" &
    local u=$!
    for _ in $(seq 300); do [ -e "$work/ready" ] && break; sleep 0.01; done; sleep 0.3
    local ip; ip=$(awk '{print $1}' "/proc/$u/task/$u/children")
    local t0=$EPOCHREALTIME; kill -TERM "$ip"; wait "$u" || true; local t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%d\n", (b - a) * 1e6}'
  done | sort -n | awk '{v[NR]=$1} END {printf "median %d us (min %d, max %d)\n", v[int((NR+1)/2)], v[1], v[NR]}'
}
echo "tini:       $(stops tini -- "$work/load")"
echo "aim-engine: $(stops "$bin" --root "$here/tests/fixtures/sysfs/mi300x-8gpu-spx" aim-test/Tiny-7B \
  --host 127.0.0.1 --port 18702 --engine-port 18703 --stop-timeout 5s)"
