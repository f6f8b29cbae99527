#!/bin/bash
# Every benchmark of bench/README.md, one after the other on the same machine, each printing
# its own tables; the output is what the summary table in bench/README.md is built from.
#   sudo bench/all.sh 2>&1 | tee bench-$(date +%F).md
# Needs root (the init bench makes PID namespaces). Builds what it runs (release and bench
# profiles). Takes about 15 minutes on 2 cores. Env: the knobs of each script (DUR, N_TTFB,
# RATE, RUNS, CODES, ROUNDS, PSS_RUNS, ...). Installs nginx and wrk from Debian when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
command -v hyperfine >/dev/null || apt-get install -y hyperfine >/dev/null 2>&1 ||
  { apt-get update >/dev/null && apt-get install -y hyperfine >/dev/null; }

cargo build --release --workspace --bins >&2
cargo bench --no-run >&2
bin=$CARGO_TARGET_DIR/release/aim-engine
root=tests/fixtures/sysfs/mi300x-8gpu-spx

echo "# bench/all.sh, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "## Detection and planning, in process (criterion)"
cargo bench --bench detect -- --warm-up-time 1 --measurement-time 3 2>/dev/null |
  grep -E "CPU time per call|^detect|time:" || true
cargo bench --bench plan -- --warm-up-time 1 --measurement-time 3 2>/dev/null |
  grep -E "^plan load|^ratio|time:" || true
echo
echo "## Whole process (hyperfine -N, 10 warm-up runs)"
md=$(mktemp)
hyperfine -N --warmup 10 --runs 200 --style none --export-markdown "$md" \
  "$bin --root $root gpus" \
  "$bin --root $root plan Qwen/Qwen3-32B" >/dev/null
cat "$md"; rm -f "$md"
echo
echo "## Supervision"
AIM_BIN=$bin sh bench/supervise_figures.sh
echo
echo "## Public port"
bash bench/http/run.sh
echo
echo "## Public port vs nginx, same zero-cost engine"
BUILD=0 bash bench/http/nginx.sh
echo
echo "## Init duties vs tini and dumb-init"
AIM_BIN=$bin bash bench/init/run.sh
echo
echo "## The public port in front of the real engine (vLLM's CPU build)"
# Installs vLLM 0.32.0 (CPU) into ~/.cache once (6.3 GB); REAL_ENGINE=0 leaves this part out.
if [ "${REAL_ENGINE:-1}" = 1 ]; then
  bash bench/real-engine/run.sh
else
  echo "not run (REAL_ENGINE=0)"
fi
