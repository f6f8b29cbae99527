#!/usr/bin/env bash
# The container suite: builds the real image from Dockerfile.unified on a stand-in for the ROCm
# base image (no registry needed) and checks what a user of the container relies on: health,
# the proxied API (streaming included), stop behaviour, in-place engine restarts, zombie
# reaping, the Compose file, the systemd unit and the Kubernetes manifests.
#
#   sudo tests/container/run.sh            (.ci/run calls it when AIM_TEST_CONTAINERS=1)
#
# It needs root on a Debian machine (it installs docker.io, docker-compose, debootstrap, curl and
# systemd from Debian's packages when they are missing) and runs its own dockerd on a private
# socket, bridge and data root, so it neither needs nor disturbs another Docker daemon. Set
# AIM_TEST_DOCKER_HOST=unix:///var/run/docker.sock to use an existing daemon instead.
#
# Nothing is skipped: anything missing is a FAIL. Output: one `PASS name` / `FAIL name: why` line
# per check, `FIGURE name: value` lines, and `container suite: N passed, M failed`; the exit
# status is non-zero when a check failed.
#
# Environment knobs: AIM_TEST_CACHE (debootstrap tarball; default /var/cache/aim-engine-test),
# AIM_TEST_STATE (dockerd data root; default /var/lib/aim-engine-test), AIM_TEST_DEBIAN_MIRROR,
# AIM_TEST_KEEP=1 (leave the daemon and containers running for debugging).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/container
CACHE=${AIM_TEST_CACHE:-/var/cache/aim-engine-test}
STATE=${AIM_TEST_STATE:-/var/lib/aim-engine-test}
RUNDIR=${AIM_TEST_RUNDIR:-/run/aim-engine-test}
MIRROR=${AIM_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BRIDGE=aimtest0
BRIDGE_CIDR=172.30.99.1/24
ADDRESS_POOL=base=172.30.100.0/22,size=26
BASE_IMAGE=aim-test/debian-minbase:$SUITE
STANDIN=aim-test/rocm-standin:latest
IMAGE=aim-engine:test
FIXTURE=$REPO/tests/fixtures/sysfs/mi300x-8gpu-spx
MODEL=Qwen/Qwen3-32B
LABEL=aim-engine-test=1
PROJECT=aimtest
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
# The oldest glibc among the ROCm vLLM base images (Ubuntu 22.04).
MAX_GLIBC=2.35
# How long the fake engine takes to shut down on SIGTERM, and how long it takes to load.
ENGINE_STOP_S=1
ENGINE_LOAD_S=1

PASSED=0
FAILED=0
FAILED_NAMES=()
STARTED_DOCKERD=
WORK=$(mktemp -d /tmp/aim-container-suite.XXXXXX)
T_SUITE=$(date +%s)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
pass() {
    PASSED=$((PASSED + 1))
    printf 'PASS %s\n' "$1"
}
fail() {
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$1")
    printf 'FAIL %s: %s\n' "$1" "$2"
}
figure() { printf 'FIGURE %s: %s\n' "$1" "$2"; }
summary() {
    local extra=
    [ "$FAILED" -gt 0 ] && extra=" (${FAILED_NAMES[*]})"
    printf 'container suite: %d passed, %d failed%s [%ss]\n' "$PASSED" "$FAILED" "$extra" "$(($(date +%s) - T_SUITE))"
}
# A setup step failed: nothing after it can be checked, so the suite fails here, loudly.
die() {
    fail setup "$*"
    summary
    exit 1
}
now() { date +%s.%N; }
# Seconds (3 decimals) between two `now` values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# True when $1 <= $2 (decimals).
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

cleanup() {
    local rc=$?
    if [ "${AIM_TEST_KEEP:-}" = 1 ]; then
        log "AIM_TEST_KEEP=1: leaving DOCKER_HOST=${DOCKER_HOST:-} running"
    elif [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
        compose down --timeout 5 --remove-orphans >/dev/null 2>&1
        local ids
        ids=$(docker ps -aq --filter "label=$LABEL" 2>/dev/null)
        [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    fi
    if [ -n "$STARTED_DOCKERD" ] && [ "${AIM_TEST_KEEP:-}" != 1 ]; then
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.1; done
        ip link del "$BRIDGE" 2>/dev/null
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------
# Setup: packages, the daemon, the binaries, the stand-in base image, the image under test.

ensure_packages() {
    local need=()
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v docker >/dev/null || need+=(docker.io)
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v curl >/dev/null || need+=(curl)
    command -v systemd-analyze >/dev/null || need+=(systemd)
    command -v ip >/dev/null || need+=(iproute2)
    command -v ps >/dev/null || need+=(procps)
    command -v docker-init >/dev/null || need+=(tini)
    python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
    [ "${#need[@]}" -eq 0 ] && return 0
    [ "$(id -u)" = 0 ] || die "missing ${need[*]} and not root: install them or run as root"
    log "installing ${need[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$WORK/apt.log" 2>&1 &&
        apt-get install -y -q --no-install-recommends "${need[@]}" >>"$WORK/apt.log" 2>&1 ||
        {
            tail -20 "$WORK/apt.log" >&2
            die "apt-get install ${need[*]} failed"
        }
}

# Compose v2 (`docker compose`) when present, else v1 (Debian's docker-compose).
compose() {
    local cmd=(docker-compose)
    docker compose version >/dev/null 2>&1 && cmd=(docker compose)
    "${cmd[@]}" -p "$PROJECT" -f "$REPO/deploy/compose.yaml" -f "$HERE/compose.test.yaml" "$@"
}

# Our own dockerd: private socket, exec root, data root and bridge, no iptables (sandboxes and
# fresh VMs often lack a working netfilter; published ports then go through docker-proxy).
start_dockerd() {
    if [ -n "${AIM_TEST_DOCKER_HOST:-}" ]; then
        export DOCKER_HOST=$AIM_TEST_DOCKER_HOST
        docker version >/dev/null 2>&1 || die "AIM_TEST_DOCKER_HOST=$DOCKER_HOST does not answer"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "starting dockerd needs root (or set AIM_TEST_DOCKER_HOST)"
    export DOCKER_HOST=unix://$RUNDIR/docker.sock
    mkdir -p "$RUNDIR" "$STATE/docker"
    if [ -f "$RUNDIR/dockerd.pid" ] && kill -0 "$(cat "$RUNDIR/dockerd.pid")" 2>/dev/null; then
        # A run that was killed before its cleanup: stop its daemon, start afresh.
        local old
        old=$(cat "$RUNDIR/dockerd.pid")
        log "stopping a leftover test dockerd (pid $old)"
        kill -TERM "$old"
        for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    fi
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
        ip addr add "$BRIDGE_CIDR" dev "$BRIDGE" || die "cannot address bridge $BRIDGE"
    fi
    ip link set "$BRIDGE" up || die "cannot bring up bridge $BRIDGE"
    local driver
    for driver in overlay2 vfs; do
        log "starting dockerd (storage driver $driver)"
        dockerd -H "$DOCKER_HOST" --data-root "$STATE/docker/$driver" --exec-root "$RUNDIR/exec" \
            --pidfile "$RUNDIR/dockerd.pid" --bridge "$BRIDGE" --iptables=false --ip-masq=false \
            --default-address-pool "$ADDRESS_POOL" --storage-driver "$driver" \
            --log-level warn >"$WORK/dockerd-$driver.log" 2>&1 &
        STARTED_DOCKERD=$!
        for _ in $(seq 1 150); do
            docker version >/dev/null 2>&1 && break
            kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
            sleep 0.2
        done
        # A daemon that answers may still fail to mount a container's rootfs (overlay on some
        # filesystems): run a container from a one-file image (the static tini) to be sure.
        if docker version >/dev/null 2>&1 && probe_container; then
            return 0
        fi
        log "dockerd with $driver did not work:"
        tail -15 "$WORK/dockerd-$driver.log" >&2
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null
        wait "$STARTED_DOCKERD" 2>/dev/null
        STARTED_DOCKERD=
    done
    die "dockerd did not start with overlay2 or vfs (logs above)"
}

probe_container() {
    local tini d
    tini=$(command -v tini-static || readlink -f "$(command -v docker-init)")
    d=$WORK/probe
    mkdir -p "$d" && cp "$tini" "$d/tini" || return 1
    tar -C "$d" -c tini | docker import - aim-test/probe:latest >/dev/null 2>&1 &&
        docker run --rm --network none aim-test/probe:latest /tini --version >/dev/null 2>&1
}

build_binaries() {
    log "building release binaries (aim-engine, fake-engine) into $TARGET_DIR"
    (cd "$REPO" && cargo build --release --locked -p aim-engine --bin aim-engine -p fake-engine --bin fake-engine) \
        >"$WORK/cargo.log" 2>&1 || {
        tail -30 "$WORK/cargo.log" >&2
        die "cargo build --release failed"
    }
    AIM_BIN=$TARGET_DIR/release/aim-engine
    FAKE_BIN=$TARGET_DIR/release/fake-engine
    [ -x "$AIM_BIN" ] || die "no $AIM_BIN after the build"
    [ -x "$FAKE_BIN" ] || die "no $FAKE_BIN after the build"
}

# The base image's rootfs, made once and cached as a tarball (debootstrap takes minutes).
ensure_base_image() {
    docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && return 0
    local tarball=$CACHE/debian-$SUITE-minbase.tar
    if [ ! -s "$tarball" ]; then
        log "debootstrap --variant=minbase $SUITE (cached afterwards in $tarball)"
        local root=$WORK/rootfs
        debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
            tail -20 "$WORK/debootstrap.log" >&2
            die "debootstrap failed"
        }
        # Slim it: no package cache, docs or locales.
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
        mkdir -p "$CACHE"
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" ||
            die "cannot write $tarball"
        rm -rf "$root"
    fi
    docker import -c 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null ||
        die "docker import $tarball failed"
}

build_images() {
    local ctx=$WORK/standin
    mkdir -p "$ctx"
    cp "$FAKE_BIN" "$ctx/fake-engine"
    log "building the stand-in base image $STANDIN"
    DOCKER_BUILDKIT=0 docker build -q --build-arg BASE="$BASE_IMAGE" -t "$STANDIN" \
        -f "$HERE/standin.Dockerfile" "$ctx" >"$WORK/standin.log" 2>&1 || {
        tail -20 "$WORK/standin.log" >&2
        die "building $STANDIN failed"
    }
    mkdir -p "$REPO/target/docker"
    cp "$AIM_BIN" "$REPO/target/docker/aim-engine"
    log "building $IMAGE from Dockerfile.unified (--target prebuilt, BASE_IMAGE=$STANDIN)"
    DOCKER_BUILDKIT=0 docker build --target prebuilt --build-arg BASE_IMAGE="$STANDIN" \
        --build-arg REVISION="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "$IMAGE" -f "$REPO/Dockerfile.unified" "$REPO" >"$WORK/build.log" 2>&1 || {
        tail -30 "$WORK/build.log" >&2
        die "docker build -f Dockerfile.unified failed"
    }
}

# ------------------------------------------------------------------------------------------
# Helpers for the checks.

# The fake engine's behaviour in every container of the suite (see tests/fake-engine/README.md).
ENGINE_ENV=(-e "FAKE_LOAD_SECS=$ENGINE_LOAD_S" -e "FAKE_SHUTDOWN_SECS=$ENGINE_STOP_S" -e FAKE_WORKERS=2 -e FAKE_ORPHANS=3)
# The options every serving container gets: the fixture GPUs, the fake engine, a loopback port.
# The fixture is mounted read-only except its dev/ (plain files standing in for the device nodes,
# which aim-engine opens read-write like the real ones): a scratch copy is mounted over it.
FIXTURE_DEV=$WORK/fixture-dev
cp -a "$FIXTURE/dev" "$FIXTURE_DEV"
FIXTURE_OPTS=(-v "$FIXTURE:/fixture:ro" -v "$FIXTURE_DEV:/fixture/dev" -e AIM_ROOT=/fixture)
SERVE_OPTS=(--label "$LABEL" "${FIXTURE_OPTS[@]}" "${ENGINE_ENV[@]}"
    -p 127.0.0.1::8000 --stop-timeout 30)

health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1" 2>/dev/null; }

# wait_healthy CONTAINER TIMEOUT_S: 0 once Docker reports healthy; prints the logs otherwise.
wait_healthy() {
    local c=$1 deadline=$(($(date +%s) + $2)) st
    while [ "$(date +%s)" -lt "$deadline" ]; do
        st=$(health "$c")
        case $st in
        healthy) return 0 ;;
        unhealthy) break ;;
        esac
        [ "$(docker inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" = true ] || break
        sleep 0.2
    done
    log "container $c: health=$(health "$c") state=$(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$c" 2>/dev/null)"
    docker logs --tail 40 "$c" >&2 2>&1
    return 1
}

host_port() { docker port "$1" 8000/tcp | head -1 | sed 's/.*://'; }

# Host pids of every process in the container.
container_pids() { docker top "$1" -eo pid 2>/dev/null | tail -n +2 | tr -d ' '; }

# ------------------------------------------------------------------------------------------
# Checks.

check_binary_portable() {
    local max
    max=$(grep -ao 'GLIBC_2\.[0-9]*' "$AIM_BIN" | sed 's/GLIBC_//' | sort -uV | tail -1)
    if [ -n "$max" ] && [ "$(printf '%s\n%s\n' "$max" "$MAX_GLIBC" | sort -V | tail -1)" = "$MAX_GLIBC" ]; then
        pass "binary needs glibc $max <= $MAX_GLIBC (runs on the rocm/vllm bases)"
    else
        fail binary-glibc "aim-engine needs GLIBC_$max, newer than the base images' $MAX_GLIBC"
    fi
}

check_image_metadata() {
    local name=image-metadata fmt got want
    fmt='{{json .Config.Entrypoint}} {{.Config.StopSignal}} {{range $p, $_ := .Config.ExposedPorts}}{{$p}}{{end}} {{json .Config.Healthcheck.Test}} {{json .Config.Healthcheck.StartPeriod}} {{index .Config.Labels "org.opencontainers.image.title"}}'
    got=$(docker image inspect -f "$fmt" "$IMAGE")
    want='["/entrypoint"] SIGTERM 8000/tcp ["CMD","/healthcheck"] 1800000000000 aim-engine'
    [ "$got" = "$want" ] || {
        fail $name "image config is '$got', want '$want'"
        return
    }
    local env
    env=$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE")
    for want in AIM_BUILTIN_RECIPES=/opt/aim-engine/recipes HF_HOME=/root/.cache/huggingface; do
        grep -qx "$want" <<<"$env" || {
            fail $name "image env lacks $want"
            return
        }
    done
    local n
    n=$(docker run --rm --label "$LABEL" --entrypoint /bin/sh "$IMAGE" -c \
        'find /opt/aim-engine/recipes -name "*.yaml" | wc -l; test -x /entrypoint && test -x /healthcheck && aim-engine --version' 2>&1)
    case $n in
    0*) fail $name "no recipes baked into /opt/aim-engine/recipes" ;;
    *aim-engine*) pass "$name (entrypoint, STOPSIGNAL, EXPOSE, HEALTHCHECK, labels, env, $(head -1 <<<"$n") recipes baked in)" ;;
    *) fail $name "image contents check said: $n" ;;
    esac
}

check_entrypoint_usage() {
    local out rc
    out=$(docker run --rm --label "$LABEL" "$IMAGE" 2>&1)
    rc=$?
    if [ "$rc" = 64 ] && grep -q 'AIM_MODEL_ID' <<<"$out"; then
        pass "entrypoint without a model prints usage, exit 64"
    else
        fail entrypoint-usage "exit $rc, output: $out"
    fi
    out=$(docker run --rm --label "$LABEL" "${FIXTURE_OPTS[@]}" "$IMAGE" gpus 2>&1)
    rc=$?
    if [ "$rc" = 0 ] && grep -q 'MI300X' <<<"$out"; then
        pass "entrypoint passes arguments (aim-engine gpus sees the fixture's MI300X)"
    else
        fail entrypoint-args "'gpus' exit $rc, output: $out"
    fi
}

# Start to healthy, the API through the published port (streaming too), /status.
check_serve() {
    local t0 t1 port out
    t0=$(now)
    C_SERVE=$(docker run -d --name aimtest-serve "${SERVE_OPTS[@]}" "$IMAGE" "$MODEL") ||
        die "docker run $IMAGE $MODEL failed"
    if ! wait_healthy aimtest-serve 120; then
        fail serve-healthy "container did not become healthy within 120 s"
        return 1
    fi
    t1=$(now)
    figure "start to healthy (fake engine loading ${ENGINE_LOAD_S}s, HEALTHCHECK interval 5s)" "$(elapsed "$t0" "$t1") s"
    pass "docker run $IMAGE $MODEL reaches health status healthy"
    port=$(host_port aimtest-serve)
    BASE_URL=http://127.0.0.1:$port
    out=$(curl -sS -m 20 -H 'Content-Type: application/json' \
        -d "{\"model\":\"$MODEL\",\"prompt\":\"Say hi\",\"max_tokens\":8}" "$BASE_URL/v1/completions" 2>&1)
    if grep -q '"choices"' <<<"$out"; then
        pass "completion through the published port"
    else
        fail completion "POST /v1/completions answered: $out"
    fi
    out=$(curl -sS -N -m 30 -H 'Content-Type: application/json' \
        -d "{\"model\":\"$MODEL\",\"prompt\":\"Say hi\",\"max_tokens\":8,\"stream\":true}" "$BASE_URL/v1/completions" 2>&1)
    local events
    events=$(grep -c '^data: {' <<<"$out")
    if [ "$events" -ge 2 ] && grep -q '^data: \[DONE\]' <<<"$out"; then
        pass "streaming completion through the published port ($events SSE events, [DONE])"
    else
        fail completion-stream "stream had $events data events: $(head -c 600 <<<"$out")"
    fi
    out=$(curl -sS -m 5 "$BASE_URL/status" 2>&1)
    if grep -q '"phase": *"ready"' <<<"$out"; then
        pass "/status says ready"
    else
        fail status-ready "/status: $(head -c 400 <<<"$out")"
    fi
}

# Orphans reparented to aim-engine (PID 1) are reaped: no zombie in `docker top`.
check_reaping() {
    local c=aimtest-serve main zombies orphans
    main=$(docker inspect -f '{{.State.Pid}}' $c)
    # In one `docker exec`: 20 orphans that live 4 s and 20 that exit at once (zombies until
    # their new parent reaps them), all reparented to PID 1 when their subshell exits.
    docker exec $c sh -c 'for i in $(seq 1 20); do (sleep 4 &); (true &); done' || true
    orphans=$(docker top $c -eo pid,ppid,comm | awk -v p="$main" '$2 == p && $3 == "sleep"' | wc -l)
    sleep 5
    zombies=$(docker top $c -eo pid,ppid,stat,comm | awk 'NR > 1 && $3 ~ /Z/')
    if [ "$orphans" -ge 1 ] && [ -z "$zombies" ]; then
        pass "orphans reparented to aim-engine are reaped ($orphans seen with PPID=aim-engine, no zombie after 5 s)"
    elif [ -n "$zombies" ]; then
        fail reaping "zombies in docker top: $zombies"
    else
        fail reaping "no orphan was reparented to aim-engine (pid $main): $(docker top $c -eo pid,ppid,comm)"
    fi
}

# An engine crash: aim-engine restarts it in place; the container neither restarts nor exits.
check_engine_crash() {
    local c=aimtest-serve started0 started1 engine out main
    started0=$(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' $c)
    main=$(docker inspect -f '{{.State.Pid}}' $c)
    # The engine is aim-engine's child running the `vllm` (fake-engine) binary.
    engine=$(docker top $c -eo pid,ppid,args | awk -v p="$main" '$2 == p && /serve/ {print $1; exit}')
    if [ -z "$engine" ]; then
        fail engine-crash "no engine process under aim-engine: $(docker top $c -eo pid,ppid,args)"
        return
    fi
    kill -KILL "$engine"
    local deadline=$(($(date +%s) + 60)) restarts=
    while [ "$(date +%s)" -lt "$deadline" ]; do
        out=$(curl -sS -m 3 "$BASE_URL/status" 2>/dev/null)
        if grep -q '"phase": *"ready"' <<<"$out" && grep -Eq '"restarts": *[1-9]' <<<"$out"; then
            restarts=$(grep -Eo '"restarts": *[0-9]+' <<<"$out" | head -1)
            break
        fi
        sleep 0.3
    done
    started1=$(docker inspect -f '{{.State.StartedAt}} {{.RestartCount}}' $c)
    if [ -n "$restarts" ] && [ "$started0" = "$started1" ] &&
        [ "$(docker inspect -f '{{.State.Running}}' $c)" = true ]; then
        pass "engine crash (SIGKILL) restarted in place, container kept running, /status shows $restarts"
    else
        fail engine-crash "after killing engine pid $engine: status=$(head -c 400 <<<"$out") container before='$started0' after='$started1'"
    fi
    wait_healthy $c 60 || fail engine-crash-healthy "not healthy again after the restart"
}

# stop_check NAME HOW CONTAINER: stops with `docker stop` or `docker kill -s TERM`, checks time,
# exit code and that no process of the container survives.
stop_check() {
    local name=$1 how=$2 c=$3 pids t0 t1 took code left= p budget
    pids=$(container_pids "$c")
    t0=$(now)
    case $how in
    stop) docker stop -t 30 "$c" >/dev/null ;;
    kill) docker kill -s TERM "$c" >/dev/null && docker wait "$c" >/dev/null ;;
    esac
    t1=$(now)
    took=$(elapsed "$t0" "$t1")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
    for p in $pids; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    budget=$((ENGINE_STOP_S + 2))
    STOP_TOOK=$took
    if le "$took" "$budget" && [ "$code" = 0 ] && [ -z "$left" ]; then
        pass "$name returns in ${took}s (engine shutdown ${ENGINE_STOP_S}s + 2s), exit 0, no process left"
    else
        fail "$name" "took ${took}s (budget ${budget}s), exit $code (want 0: a requested stop), processes left:${left:- none}; logs: $(docker logs --tail 15 "$c" 2>&1 | tr '\n' '|')"
    fi
}

check_stop() {
    if [ -n "${C_SERVE:-}" ]; then
        stop_check "docker stop" stop aimtest-serve
        figure "docker stop, aim-engine as PID 1" "${STOP_TOOK}s"
    fi
    docker run -d --name aimtest-kill "${SERVE_OPTS[@]}" "$IMAGE" "$MODEL" >/dev/null || die "docker run failed"
    if wait_healthy aimtest-kill 120; then
        stop_check "docker kill -s TERM" kill aimtest-kill
    else
        fail "docker kill -s TERM" "container did not become healthy"
    fi
}

# The same stop under tini (docker run --init: aim-engine is PID 2) and for the engine alone.
figures_stop_compare() {
    docker run -d --init --name aimtest-init "${SERVE_OPTS[@]}" "$IMAGE" "$MODEL" >/dev/null || return
    if wait_healthy aimtest-init 120; then
        local t0 t1
        t0=$(now)
        docker stop -t 30 aimtest-init >/dev/null
        t1=$(now)
        figure "docker stop, tini (--init) as PID 1 + aim-engine" "$(elapsed "$t0" "$t1")s exit $(docker inspect -f '{{.State.ExitCode}}' aimtest-init)"
    fi
    docker run -d --name aimtest-alone --label "$LABEL" "${ENGINE_ENV[@]}" --entrypoint vllm "$STANDIN" \
        serve "$MODEL" --host 0.0.0.0 --port 8000 >/dev/null || return
    sleep $((ENGINE_LOAD_S + 1))
    local t0 t1
    t0=$(now)
    docker stop -t 10 aimtest-alone >/dev/null
    t1=$(now)
    figure "docker stop, the fake engine alone as PID 1" "$(elapsed "$t0" "$t1")s exit $(docker inspect -f '{{.State.ExitCode}}' aimtest-alone)"
}

figure_image_size() {
    local a b
    a=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    b=$(docker image inspect -f '{{.Size}}' "$STANDIN")
    figure "image size over the base" "$(((a - b) / 1024)) KiB ($a - $b bytes; binary $(stat -c %s "$AIM_BIN") bytes)"
}

check_compose() {
    export AIM_IMAGE=$IMAGE AIM_TEST_FIXTURE=$FIXTURE AIM_TEST_FIXTURE_DEV=$FIXTURE_DEV AIM_MODEL_ID=$MODEL
    export AIM_HF_CACHE=$WORK/hf-cache AIM_PUBLISH_PORT=18000
    mkdir -p "$AIM_HF_CACHE"
    # A free port near 18000 for the published API.
    while curl -s -m 1 "http://127.0.0.1:$AIM_PUBLISH_PORT/" >/dev/null 2>&1 ||
        (exec 3<>"/dev/tcp/127.0.0.1/$AIM_PUBLISH_PORT") 2>/dev/null; do
        AIM_PUBLISH_PORT=$((AIM_PUBLISH_PORT + 1))
    done
    if ! compose config -q >"$WORK/compose-config.log" 2>&1; then
        fail compose-config "$(cat "$WORK/compose-config.log")"
        return
    fi
    COMPOSE_T0=$(date +%s)
    # `up` waits for service_healthy; a broken image must not hold it for the 30 min start period.
    compose up -d >"$WORK/compose-up.log" 2>&1 &
    local up=$! waited=0
    while kill -0 $up 2>/dev/null && [ $waited -lt 2400 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -0 $up 2>/dev/null && kill -TERM $up
    if ! wait $up; then
        fail compose-up "$(tail -20 "$WORK/compose-up.log")"
        return
    fi
    local eng cli deadline st
    svc() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1"; }
    eng=$(svc aim-engine)
    deadline=$(($(date +%s) + 120))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        cli=$(svc client)
        if [ -n "$cli" ] && [ "$(docker inspect -f '{{.State.Status}}' "$cli")" = exited ]; then break; fi
        sleep 0.5
    done
    st=$(health "$eng")
    if [ "$st" != healthy ]; then
        fail compose-healthy "aim-engine service is '$st'; $(docker logs --tail 20 "$eng" 2>&1 | tr '\n' '|')"
    else
        pass "compose: the aim-engine service comes up healthy"
    fi
    if [ -z "$cli" ]; then
        fail compose-depends-on "the client service never started"
    else
        # From the daemon's event log: when aim-engine turned healthy, when the client started.
        local healthy_at client_at client_exit until
        # --until takes whole seconds here: the next one, or an event of this second is missed
        # (the client may start and exit within the second the loop above saw it exit).
        until=$(($(date +%s) + 1))
        healthy_at=$(docker events --since "$COMPOSE_T0" --until "$until" --filter "container=$eng" \
            --format '{{.TimeNano}} {{.Action}}' | awk '$3 == "healthy" {print $1; exit}')
        client_at=$(docker events --since "$COMPOSE_T0" --until "$until" --filter "container=$cli" \
            --filter event=start --format '{{.TimeNano}}' | head -1)
        client_exit=$(docker inspect -f '{{.State.ExitCode}}' "$cli")
        if [ -n "$healthy_at" ] && [ -n "$client_at" ] && [ "$client_at" -gt "$healthy_at" ] && [ "$client_exit" = 0 ]; then
            pass "compose: the dependent service starts only after healthy ($(((client_at - healthy_at) / 1000000)) ms later) and sees ready"
        else
            fail compose-depends-on "client started at ${client_at:-never} exit $client_exit; healthy at ${healthy_at:-never}; $(docker logs "$cli" 2>&1 | tail -5 | tr '\n' '|')"
        fi
    fi
    local t0 t1 left
    t0=$(now)
    compose down --timeout 60 >"$WORK/compose-down.log" 2>&1
    t1=$(now)
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    if [ -z "$left" ] && ! docker network ls --format '{{.Name}}' | grep -q "^${PROJECT}_"; then
        pass "compose down is clean in $(elapsed "$t0" "$t1")s (no container or network left)"
    else
        fail compose-down "left: containers '$left' networks '$(docker network ls --format '{{.Name}}' | grep "^${PROJECT}_")'"
    fi
}

check_systemd_unit() {
    local root=$WORK/sysroot out rc unit=$REPO/deploy/systemd/aim-engine@.service
    mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
    # verify resolves ExecStart and the default dependencies under --root.
    cp "$AIM_BIN" "$root/usr/local/bin/aim-engine"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/" 2>/dev/null ||
        cp -a /lib/systemd/system "$root/usr/lib/systemd/"
    cp "$unit" "$root/etc/systemd/system/"
    out=$(systemd-analyze verify --root="$root" aim-engine@demo.service 2>&1)
    rc=$?
    # verify exits 0 on settings it could not parse (it only warns), so any output is a failure.
    if [ "$rc" != 0 ] || [ -n "$out" ]; then
        fail systemd-verify "systemd-analyze verify exit $rc: $out"
        return
    fi
    local want missing=
    for want in Type=notify NotifyAccess=main KillMode=mixed WatchdogSec= Restart=on-failure \
        TimeoutStartSec= TimeoutStopSec= 'EnvironmentFile=/etc/aim-engine/%i.env' \
        'ExecStart=/usr/local/bin/aim-engine serve'; do
        grep -q "^$want" "$unit" || missing="$missing $want"
    done
    if [ -z "$missing" ]; then
        pass "systemd-analyze verify aim-engine@demo.service (Type=notify, KillMode=mixed, watchdog, timeouts)"
    else
        fail systemd-unit "missing:$missing"
    fi
}

check_kubernetes() {
    local out
    out=$(python3 - "$REPO/deploy/kubernetes" <<'EOF' 2>&1
import sys, pathlib, yaml
docs = [d for f in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
kinds = {d["kind"]: d for d in docs}
problems = []
for k in ("Deployment", "Service"):
    if k not in kinds:
        problems.append(f"no {k}")
dep = kinds.get("Deployment")
if dep:
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    def path(probe):
        return c.get(probe, {}).get("httpGet", {}).get("path")
    if path("readinessProbe") != "/health/ready": problems.append("readinessProbe is not /health/ready")
    if path("livenessProbe") != "/health/live": problems.append("livenessProbe is not /health/live")
    if path("startupProbe") not in ("/health/live", "/health/ready"): problems.append("no startupProbe on a health path")
    if "amd.com/gpu" not in c.get("resources", {}).get("limits", {}): problems.append("no amd.com/gpu limit")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    shm = vols.get(mounts.get("/dev/shm"), {})
    if shm.get("emptyDir", {}).get("medium") != "Memory": problems.append("/dev/shm is not an in-memory emptyDir")
    if "/root/.cache/huggingface" not in mounts: problems.append("no HF cache volume at /root/.cache/huggingface")
    if pod.get("terminationGracePeriodSeconds", 30) < 45: problems.append("terminationGracePeriodSeconds below the engine's 30 s stop + drain")
    ports = [p["containerPort"] for p in c.get("ports", [])]
    if 8000 not in ports: problems.append("container port 8000 not declared")
svc = kinds.get("Service")
if svc and dep and svc["spec"]["selector"] != dep["spec"]["selector"]["matchLabels"]:
    problems.append("Service selector does not match the Deployment's pods")
print("; ".join(problems) if problems else "ok")
sys.exit(1 if problems else 0)
EOF
    )
    if [ "$?" = 0 ]; then
        pass "kubernetes manifests (probes on /health/ready and /health/live, amd.com/gpu, in-memory /dev/shm, HF cache, grace)"
    else
        fail kubernetes "$out"
    fi
}

check_host_commands() {
    local script=$HERE/host-commands.sh
    [ -f "$script" ] || return 0
    log "running $script"
    if AIM_TEST_IMAGE=$IMAGE AIM_TEST_ROOT=$FIXTURE AIM_ENGINE_BIN=$AIM_BIN \
        bash "$script" >"$WORK/host.log" 2>&1; then
        pass "host commands (launch/list/stop) against the built image"
    else
        fail host-commands "$(tail -30 "$WORK/host.log")"
    fi
    # Its PASS/FAIL lines, for the record.
    grep -E '^(PASS|FAIL) |^host commands:' "$WORK/host.log" | sed 's/^/  host: /'
}

# ------------------------------------------------------------------------------------------

main() {
    [ -d "$FIXTURE/sys" ] || die "fixture $FIXTURE missing"
    ensure_packages
    build_binaries
    check_binary_portable
    check_systemd_unit
    check_kubernetes
    start_dockerd
    ensure_base_image
    build_images
    figure_image_size
    check_image_metadata
    check_entrypoint_usage
    docker rm -f $(docker ps -aq --filter "label=$LABEL") >/dev/null 2>&1
    if check_serve; then
        check_reaping
        check_engine_crash
    fi
    check_stop
    figures_stop_compare
    check_compose
    check_host_commands
    summary
    [ "$FAILED" = 0 ]
}

main "$@"
