#!/usr/bin/env bash
# Integration tests of `aim-engine launch / list / stop` against a real Docker engine.
#
# Run by tests/container/run.sh once dockerd is up and the image is built; can also be run by
# hand on any machine with a Docker daemon and the image:
#   tests/container/host-commands.sh
# Environment:
#   AIM_ENGINE_BIN  the host binary (or AIM_BIN; default: $CARGO_TARGET_DIR or target/{debug,release}/,
#                   else `aim-engine` on PATH)
#   AIM_TEST_IMAGE  the image to launch (default aim-engine:test; its `vllm` is the fake engine)
#   AIM_TEST_ROOT   sysfs fixture root (or AIM_TEST_FIXTURE) standing in for the host's GPUs
#                   (default tests/fixtures/sysfs/mi300x-8gpu-spx: 8x MI300X, full xGMI mesh)
#   AIM_TEST_READY_TIMEOUT  how long a launch may take to become ready (default 180s)
#   DOCKER_HOST     as for any Docker client
#
# Test seam: with --root pointing at a fixture, `launch` bind-mounts the fixture's sys/ and the
# chosen GPUs' dev/ files into the container (AIM_ROOT=/aim-root there), so detection inside
# sees exactly the GPUs given, as /dev/dri would on a real host.
#
# Prints PASS/FAIL per check and `host commands: N passed, M failed`; exits 1 on any failure.
set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
image="${AIM_TEST_IMAGE:-aim-engine:test}"
root="${AIM_TEST_ROOT:-${AIM_TEST_FIXTURE:-$repo/tests/fixtures/sysfs/mi300x-8gpu-spx}}"
ready_timeout="${AIM_TEST_READY_TIMEOUT:-180s}"

bin="${AIM_ENGINE_BIN:-${AIM_BIN:-}}"
if [ -z "$bin" ]; then
    for t in "${CARGO_TARGET_DIR:-$repo/target}/debug" "${CARGO_TARGET_DIR:-$repo/target}/release"; do
        if [ -x "$t/aim-engine" ]; then bin="$t/aim-engine"; break; fi
    done
fi
if [ -z "$bin" ]; then bin="$(command -v aim-engine || true)"; fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "FAIL setup: no aim-engine binary (set AIM_ENGINE_BIN)"
    echo "host commands: 0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1${2:+: $2}"; failed=$((failed + 1)); }
# check NAME CMD...: PASS when CMD succeeds.
# On failure the last command's stderr tail is shown.
check() {
    local n="$1"; shift
    if "$@"; then pass "$n"; else fail "$n" "exit ${rc:-?}"; tail -n 5 "$work/err" 2>/dev/null | sed 's/^/    /'; fi
}

work="$(mktemp -d)"
hf="$work/hf-cache"
mkdir -p "$hf"
launched=()

# aim-engine with the fixture root and a private HF cache; output in $out/$err, status in $rc.
ae() {
    "$bin" --root "$root" "$@" >"$work/out" 2>"$work/err"
    rc=$?
    out="$(cat "$work/out")"
    err="$(cat "$work/err")"
    return 0
}

cleanup() {
    for n in "${launched[@]}"; do
        docker rm -f "$n" >/dev/null 2>&1 || true
    done
    docker rm -f aimtest-not-ours >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Render-minor list of a container, from its labels.
minors() { docker inspect -f '{{index .Config.Labels "ai.amd.aim-engine.render-minors"}}' "$1" 2>/dev/null; }
# The renderD files bind-mounted into a container, sorted, one per line.
mounted_nodes() {
    docker inspect -f '{{range .Mounts}}{{.Destination}}{{"\n"}}{{end}}' "$1" 2>/dev/null \
        | grep -o 'renderD[0-9]*' | sort
}
# Name of the container launch reported ("Started NAME (...").
started_name() { sed -n 's/^Started \([^ ]*\) (.*/\1/p' "$work/err" | head -1; }

echo "host commands: binary $bin, image $image, fixture $root"
if ! docker image inspect "$image" >/dev/null 2>&1; then
    fail "setup" "image $image missing"
    echo "host commands: $passed passed, $failed failed"
    exit 1
fi
export AIM_HOST_HF_CACHE="$hf"

# --- dry run: no Docker needed ---------------------------------------------------------
DOCKER_HOST=unix:///nonexistent/docker.sock ae launch Qwen/Qwen3-32B 4 --image "$image" --dry-run --format json
check "dry-run prints the spec without Docker" [ "$rc" = 0 ]
check "dry-run spec pins the recipe and maps 4 fixture render nodes" \
    bash -c '[[ "$1" == *"AIM_PROFILE_ID"* ]] && [ "$(grep -o "/aim-root/dev/dri/renderD[0-9]*\"" <<<"$1" | wc -l)" = 4 ]' _ "$out"

# --- two models side by side -------------------------------------------------------------
ae launch Qwen/Qwen3-32B 4 --image "$image" --ready-timeout "$ready_timeout"
a="$(started_name)"
[ -n "$a" ] && launched+=("$a")
check "launch model A (4 GPUs) becomes ready" bash -c '[ "$1" = 0 ] && [[ "$2" == *"is ready"* ]]' _ "$rc" "$out"
[ "$rc" = 0 ] || echo "  stderr: $err"
check "model A is named aim-engine-qwen-qwen3-32b-4gpu-<precision>-<engine>" \
    bash -c '[[ "$1" =~ ^aim-engine-qwen-qwen3-32b-4gpu-[a-z0-9]+-(vllm|sglang)$ ]]' _ "$a"
check "ready output has a curl example" bash -c '[[ "$1" == *"curl http://"*"/v1/chat/completions"* ]]' _ "$out"

ae launch meta-llama/Llama-3.1-8B-Instruct 2 --image "$image" --ready-timeout "$ready_timeout"
b="$(started_name)"
[ -n "$b" ] && launched+=("$b")
check "launch model B (2 GPUs) becomes ready" [ "$rc" = 0 ]
[ "$rc" = 0 ] || echo "  stderr: $err"

ma="$(mounted_nodes "$a")"
mb="$(mounted_nodes "$b")"
check "A got 4 render nodes, B got 2" bash -c '[ "$(wc -w <<<"$1")" = 4 ] && [ "$(wc -w <<<"$2")" = 2 ]' _ "$ma" "$mb"
check "A and B device sets are disjoint" bash -c '[ -z "$(comm -12 <(echo "$1") <(echo "$2"))" ]' _ "$ma" "$mb"
check "labels match the mounted nodes" \
    bash -c '[ "$(tr , "\n" <<<"$1" | sed s/^/renderD/ | sort)" = "$2" ]' _ "$(minors "$a")" "$ma"
check "A and B publish different ports" bash -c '[ -n "$1" ] && [ "$1" != "$2" ]' _ \
    "$(docker inspect -f '{{index .Config.Labels "ai.amd.aim-engine.port"}}' "$a" 2>/dev/null)" \
    "$(docker inspect -f '{{index .Config.Labels "ai.amd.aim-engine.port"}}' "$b" 2>/dev/null)"
check "inside A, detection sees exactly its 4 GPUs" bash -c \
    '[ "$(docker exec "$1" aim-engine gpus --format json 2>/dev/null | grep -c "\"render_minor\"")" = 4 ]' _ "$a"

# --- list ----------------------------------------------------------------------------------
ae list
check "list shows both" bash -c '[ "$1" = 0 ] && [[ "$2" == *"$3"* ]] && [[ "$2" == *"$4"* ]]' _ "$rc" "$out" "$a" "$b"
ae list --format json
check "list --format json shows both with their GPUs" \
    bash -c '[ "$1" = 0 ] && [[ "$2" == *"\"name\": \"$3\""* ]] && [[ "$2" == *"\"name\": \"$4\""* ]] && [[ "$2" == *"\"render_minors\""* ]]' \
    _ "$rc" "$out" "$a" "$b"

# --- not enough GPUs: 8 - 4 - 2 = 2 free ---------------------------------------------------
ae launch Qwen/Qwen3-32B 4 --image "$image" --detach
[ "$rc" = 0 ] && launched+=("$(started_name)")
check "a third 4-GPU launch is refused, naming the holders" \
    bash -c '[ "$1" = 69 ] && [[ "$2" == *"$3"* ]] && [[ "$2" == *"$4"* ]]' _ "$rc" "$err" "$a" "$b"

# --- stop frees GPUs for the next launch ---------------------------------------------------
ae stop "$a"
check "stop A succeeds" [ "$rc" = 0 ]
check "A is removed" bash -c '! docker inspect "$1" >/dev/null 2>&1' _ "$a"
ae list
check "list no longer shows A" bash -c '[[ "$1" != *"$2 "* ]] && [[ "$1" == *"$3"* ]]' _ "$out" "$a" "$b"
ae launch Qwen/Qwen3-32B 4 --image "$image" --detach
c="$(started_name)"
[ -n "$c" ] && launched+=("$c")
check "a 4-GPU launch after stop gets A's freed GPUs" \
    bash -c '[ "$1" = 0 ] && [ "$2" = "$3" ]' _ "$rc" "$(mounted_nodes "$c")" "$ma"

# --- names ---------------------------------------------------------------------------------
ae launch meta-llama/Llama-3.1-8B-Instruct 2 --image "$image" --detach
d="$(started_name)"
[ -n "$d" ] && launched+=("$d")
check "a taken name gets a suffix" bash -c '[ "$1" = 0 ] && [ "$2" = "$3-2" ]' _ "$rc" "$d" "$b"

# --- clear errors --------------------------------------------------------------------------
docker create --name aimtest-not-ours "$image" >/dev/null 2>&1
ae stop aimtest-not-ours
check "stop refuses a container aim-engine did not launch" \
    bash -c '[ "$1" = 64 ] && [[ "$2" == *"not an aim-engine container"* ]]' _ "$rc" "$err"
check "that container is left alone" bash -c 'docker inspect aimtest-not-ours >/dev/null 2>&1'
ae stop aimtest-no-such-container
check "stop of an unknown name says so" bash -c '[ "$1" = 64 ] && [[ "$2" == *"no container named"* ]]' _ "$rc" "$err"
ae launch Qwen/Qwen3-8B 1 --image aim-engine:no-such-tag --detach
check "a missing image says how to build it" \
    bash -c '[ "$1" != 0 ] && [[ "$2" == *"docker build -f Dockerfile.unified"* ]]' _ "$rc" "$err"
DOCKER_HOST=unix:///nonexistent/docker.sock ae list
check "no Docker socket names the socket and DOCKER_HOST" \
    bash -c '[ "$1" != 0 ] && [[ "$2" == *"/nonexistent/docker.sock"* ]] && [[ "$2" == *DOCKER_HOST* ]]' _ "$rc" "$err"

# --- stop --all ----------------------------------------------------------------------------
ae stop --all --timeout 20
check "stop --all succeeds" [ "$rc" = 0 ]
ae list --format json
check "nothing is left after stop --all" bash -c '[ "$1" = 0 ] && [ "$(tr -d " \n" <<<"$2")" = "[]" ]' _ "$rc" "$out"

# --- a failing engine: class and log tail shown, container stopped -------------------------
# A derived image whose fake engine dies at start with an OOM text; one attempt, no fallback.
failing="aim-engine:host-commands-failing"
printf 'FROM %s\nENV FAKE_FAIL_AT_START="torch.OutOfMemoryError: HIP out of memory. Tried to allocate 2.00 GiB" AIM_RESTART_BUDGET=1 AIM_BACKOFF_INITIAL=100ms AIM_BACKOFF_MAX=200ms\n' "$image" \
    | docker build -q -t "$failing" - >/dev/null 2>&1
ae launch Qwen/Qwen3-8B 1 --image "$failing" --ready-timeout "$ready_timeout"
f="$(started_name)"
[ -n "$f" ] && launched+=("$f")
check "a failing launch exits 70 with the failure class" \
    bash -c '[ "$1" = 70 ] && [[ "$2" == *"failure class oom"* ]]' _ "$rc" "$err"
check "a failing launch shows the engine's log tail" \
    bash -c '[[ "$1" == *"HIP out of memory"* ]]' _ "$err"
check "the failed container is stopped, not restarting" \
    bash -c '[ "$(docker inspect -f "{{.State.Status}}" "$1" 2>/dev/null)" = exited ]' _ "$f"
ae stop "$f"
check "stop removes the failed container" bash -c '[ "$1" = 0 ] && ! docker inspect "$2" >/dev/null 2>&1' _ "$rc" "$f"
docker rmi "$failing" >/dev/null 2>&1 || true

echo "host commands: $passed passed, $failed failed"
[ "$failed" = 0 ]
