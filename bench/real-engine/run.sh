#!/usr/bin/env bash
# The public port in front of the real engine: vLLM 0.32.0's CPU build serving the tiny test
# model, measured directly on its loopback port and through aim-engine's public port, in one
# run, interleaved round by round (bench/real-engine/load.py).
#   bench/real-engine/run.sh            # ~4 minutes on 2 cores (the engine's start is ~1 of them)
# Env: CONCURRENCY (default "1 4"), SECONDS_PER_ROUND (10), ROUNDS (3), TTFB (30).
# Installs the engine first if needed (tests/real-engine/install.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
venv=$(tests/real-engine/install.sh)
cargo build --release --bin aim-engine >&2
bin=$CARGO_TARGET_DIR/release/aim-engine
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$venv/bin/python" tests/real-engine/make_model.py "$work/tiny-llama" >/dev/null 2>&1
port=18400 engine_port=18401
AIM_VLLM_COMMAND=$venv/bin/vllm VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 NO_COLOR=1 \
  "$bin" --root tests/fixtures/sysfs/mi300x-8gpu-spx serve "$work/tiny-llama" 1 \
  --port $port --host 127.0.0.1 --engine-port $engine_port \
  --engine-args '{"max-model-len": 256}' >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  curl -sf "127.0.0.1:$port/health/ready" >/dev/null && break
  kill -0 $pid 2>/dev/null || { tail -20 "$work/log"; exit 1; }
  sleep 0.5
done
version=$(curl -s "127.0.0.1:$port/status" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["engine_version"])')
echo "engine: vLLM $version (CPU build), tiny random-weight Llama (tests/real-engine/make_model.py), max-model-len 256"
echo "direct = the engine's own port $engine_port; through = aim-engine's public port $port"
for c in ${CONCURRENCY:-1 4}; do
  echo
  "$venv/bin/python" bench/real-engine/load.py --model tiny-llama \
    --target direct=127.0.0.1:$engine_port --target through=127.0.0.1:$port \
    --concurrency "$c" --seconds "${SECONDS_PER_ROUND:-10}" --rounds "${ROUNDS:-3}" --ttfb "${TTFB:-30}"
done
