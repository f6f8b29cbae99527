#!/usr/bin/env bash
# The real-engine suite: installs vLLM's CPU build (idempotent, tests/real-engine/install.sh),
# then runs the suite's cases in the one integration-test binary (tests/it/real_engine.rs).
#
#   tests/real-engine/run.sh [extra cargo test args...]
#
# The cases are #[ignore]d in a plain `cargo test`; `-- --ignored` is the switch, and this
# script is what turns it on (as .ci/run does). One case at a time: each starts the engine.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(tests/real-engine/install.sh)
export AIM_REAL_ENGINE_VENV=$venv
start=$(date +%s)
cargo test --test it "$@" real_engine:: -- --ignored --test-threads=1 --nocapture
echo "real-engine suite: $(( $(date +%s) - start ))s"
