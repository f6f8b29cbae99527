#!/bin/bash
# Init duties, side by side: tini, dumb-init and aim-engine, each PID 1 of a fresh PID
# namespace (unshare --pid --fork --mount-proc) running the same workload (workload.c).
#   cargo build --release -p aim-engine && sudo bench/init/run.sh
# Measures: VmRSS and PSS (smaps_rollup) while idle; time to reap 10,000 orphaned zombies;
# SIGTERM-to-exit latency when the child exits at once; exit-code fidelity for all 256 codes
# and signal deaths. Prints Markdown tables (ratios against tini). Needs root (unshare).
# Env: AIM_BIN (default $CARGO_TARGET_DIR/release/aim-engine), RUNS (default 5),
# ZOMBIES (default 10000), CODES (default "all": 0..255; or e.g. "0 1 2 127 255").
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${AIM_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/aim-engine}
root=$here/tests/fixtures/sysfs/mi300x-8gpu-spx
runs=${RUNS:-5}
zombies=${ZOMBIES:-10000}
[ "$(id -u)" = 0 ] || { echo "run as root (unshare --pid)"; exit 1; }
[ -x "$bin" ] || { echo "no aim-engine at $bin: cargo build --release -p aim-engine"; exit 1; }

# Peers from Debian's packages, installed when missing.
need=()
command -v tini >/dev/null || need+=(tini)
command -v dumb-init >/dev/null || need+=(dumb-init)
command -v cc >/dev/null || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
work=$(mktemp -d)
cleanup() { for p in $(jobs -p); do kill -KILL "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cc -O2 -o "$work/load" "$here/bench/init/workload.c"
export HF_HOME=$work/hf HF_HUB_OFFLINE=1 AIM_LOG_LEVEL=warn
export AIM_VLLM_COMMAND=$work/load AIM_SGLANG_COMMAND=$work/load

inits=(tini dumb-init aim-engine)
port=${PORT:-18702}
# The command line of init $1 around the workload (one init runs at a time: fixed ports).
init_cmd() {
  case $1 in
    tini) echo "tini -- $work/load" ;;
    dumb-init) echo "dumb-init $work/load" ;;
    aim-engine)
      echo "$bin --root $root aim-test/Tiny-7B --host 127.0.0.1 --port $port --engine-port $((port + 1)) --stop-timeout 5s" ;;
  esac
}

# Starts init $1 as PID 1 (env for the workload already exported); sets upid (unshare) and
# ipid (the init, host pid).
start() {
  # The command line is expanded here, not in the background job: a `$(...)` there runs in
  # a subshell of the job, which the children scan below could take for the init (and a
  # TERM sent to that subshell is lost).
  local cmd
  read -ra cmd <<<"$(init_cmd "$1")"
  unshare --pid --fork --mount-proc "${cmd[@]}" >/dev/null 2>"$work/err" &
  upid=$!
  ipid=
  for _ in $(seq 1 500); do
    ipid=$(awk '{print $1}' "/proc/$upid/task/$upid/children" 2>/dev/null || true)
    [ -n "$ipid" ] && break
    sleep 0.01
  done
  [ -n "$ipid" ] || { echo "init $1 did not start"; cat "$work/err"; exit 1; }
}
wait_file() { for _ in $(seq 1 "${2:-3000}"); do [ -e "$1" ] && return 0; sleep 0.01; done; return 1; }
stop() { kill -KILL "$ipid" 2>/dev/null || true; wait "$upid" 2>/dev/null || true; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "versions: tini $(tini --version | awk '{print $3}'), dumb-init $(dumb-init --version 2>&1 | awk '{print $2}'), aim-engine $(stat -c %s "$bin") bytes ($bin)"
echo

# 1. Memory while idle (1 s after start; aim-engine is waiting for its engine to load and
# polls it every 200 ms).
declare -A rss pss
for i in "${inits[@]}"; do
  : > "$work/rss"; : > "$work/pss"
  for _ in $(seq 1 "$runs"); do
    rm -f "$work/ready"
    FAKE_INITLOAD_MODE=idle FAKE_INITLOAD_READY=$work/ready start "$i"
    wait_file "$work/ready"; sleep 1
    awk '/^VmRSS/ {print $2}' "/proc/$ipid/status" >> "$work/rss"
    awk '/^Pss:/ {print $2}' "/proc/$ipid/smaps_rollup" >> "$work/pss"
    stop
  done
  rss[$i]=$(median < "$work/rss"); pss[$i]=$(median < "$work/pss")
done
echo "| idle, median of $runs | VmRSS kB | PSS kB | PSS / tini |"
echo "|---|---|---|---|"
for i in "${inits[@]}"; do echo "| $i | ${rss[$i]} | ${pss[$i]} | $(ratio "${pss[$i]}" "${pss[tini]}") |"; done
echo

# 2. Reaping ZOMBIES orphans: the workload forks them (double fork), then times until no
# zombie is left in the namespace (scanning /proc every 200 us).
declare -A reap whole
for i in "${inits[@]}"; do
  : > "$work/reap"; : > "$work/whole"
  for _ in $(seq 1 "$runs"); do
    rm -f "$work/zout"
    FAKE_INITLOAD_MODE=zombies FAKE_INITLOAD_N=$zombies FAKE_INITLOAD_OUT=$work/zout start "$i"
    wait_file "$work/zout" 12000 || { echo "$i: no zombie result"; cat "$work/err"; exit 1; }
    sleep 0.05
    read -r created reaped left < "$work/zout"
    [ "$left" = 0 ] || echo "$i: $left zombies left after 60 s"
    echo "$reaped" >> "$work/reap"
    echo $((created + reaped)) >> "$work/whole"
    stop
  done
  reap[$i]=$(median < "$work/reap"); whole[$i]=$(median < "$work/whole")
done
# "first fork -> empty" is the fair figure: an init that reaps while the workload still forks
# (tini) has little left after the last fork, one that lags has more.
echo "| reap $zombies orphans, median of $runs | ms from the first fork until no zombie | / tini | ms from the last fork | / tini |"
echo "|---|---|---|---|---|"
ms() { awk -v u="$1" 'BEGIN{printf "%.1f", u/1000}'; }
for i in "${inits[@]}"; do echo "| $i | $(ms "${whole[$i]}") | $(ratio "${whole[$i]}" "${whole[tini]}") | $(ms "${reap[$i]}") | $(ratio "${reap[$i]}" "${reap[tini]}") |"; done
echo

# 3. SIGTERM -> exit, the child dying of the TERM at once (default action).
declare -A term
for i in "${inits[@]}"; do
  : > "$work/term"
  for _ in $(seq 1 "$((runs * 4))"); do
    rm -f "$work/ready"
    FAKE_INITLOAD_MODE=idle FAKE_INITLOAD_READY=$work/ready start "$i"
    wait_file "$work/ready"; sleep 0.3
    t0=$EPOCHREALTIME
    kill -TERM "$ipid" 2>/dev/null || true
    wait "$upid" || true
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%d\n", (b - a) * 1e6}' >> "$work/term"
  done
  term[$i]=$(median < "$work/term")
done
echo "| SIGTERM -> exit, median of $((runs * 4)) | us (kill to wait() return in bash) | / tini |"
echo "|---|---|---|"
for i in "${inits[@]}"; do echo "| $i | ${term[$i]} | $(ratio "${term[$i]}" "${term[tini]}") |"; done
echo

# 4. Exit-code fidelity: the child exits with CODE (or dies by SIG) when the init gets
# SIGTERM; the init's status must be CODE (128+SIG). "own": the child exits CODE on its own
# at once (tini and dumb-init only: aim-engine restarts an engine that ends on its own).
codes=${CODES:-all}
[ "$codes" = all ] && codes=$(seq 0 255)
sigs="1 2 3 4 6 7 8 9 10 11 12 13 14 15"
echo "| exit-code fidelity | on SIGTERM: codes right | signal deaths right ($sigs) | own exit: codes right |"
echo "|---|---|---|---|"
for i in "${inits[@]}"; do
  okc=0; nc=0; oks=0; ns=0; oko=0; no=0; bad=""
  for c in $codes; do
    rm -f "$work/ready"
    FAKE_INITLOAD_MODE=term-exit FAKE_INITLOAD_CODE=$c FAKE_INITLOAD_READY=$work/ready start "$i"
    wait_file "$work/ready"
    kill -TERM "$ipid" 2>/dev/null || true
    st=0; wait "$upid" || st=$?
    nc=$((nc + 1)); if [ "$st" = "$c" ]; then okc=$((okc + 1)); else bad="$bad $c->$st"; fi
  done
  for s in $sigs; do
    rm -f "$work/ready"
    FAKE_INITLOAD_MODE=term-signal FAKE_INITLOAD_SIG=$s FAKE_INITLOAD_READY=$work/ready start "$i"
    wait_file "$work/ready"
    kill -TERM "$ipid" 2>/dev/null || true
    st=0; wait "$upid" || st=$?
    ns=$((ns + 1)); if [ "$st" = $((128 + s)) ]; then oks=$((oks + 1)); else bad="$bad sig$s->$st"; fi
  done
  own="n/a (restarts by design)"
  if [ "$i" != aim-engine ]; then
    for c in $codes; do
      st=0
      # shellcheck disable=SC2046
      FAKE_INITLOAD_MODE=exit FAKE_INITLOAD_CODE=$c unshare --pid --fork --mount-proc $(init_cmd "$i") >/dev/null 2>&1 || st=$?
      no=$((no + 1)); [ "$st" = "$c" ] && oko=$((oko + 1))
    done < /dev/null
    own="$oko/$no"
  fi
  echo "| $i | $okc/$nc | $oks/$ns | $own |"
  [ -z "$bad" ] || echo "$i mismatches:$bad" >&2
done
