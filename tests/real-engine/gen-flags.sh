#!/usr/bin/env bash
# Regenerates the engine flag tables from the real engines' own parsers:
#   src/engine/tables/vllm-<version>.json and src/engine/tables/sglang-<version>.json
#
#   tests/real-engine/gen-flags.sh
#
# Installs (idempotently) the pinned vLLM CPU build (install.sh) and SGLang's parser
# (install-sglang.sh), loads each parser (tests/real-engine/engine_flags.py) and writes its
# table. Pinning a new engine version: bump the version in the install script, run this, read
# `git diff --stat src/engine/tables` and the diff of the old table against the new one, add
# the table to `TABLES` in src/engine/table.rs, and a version rule in src/engine/version.rs
# for every flag that was renamed or dropped.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
vllm=$(tests/real-engine/install.sh)
sglang=$(tests/real-engine/install-sglang.sh)
mkdir -p src/engine/tables
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for pair in "vllm:$vllm" "sglang:$sglang"; do
    engine=${pair%%:*}
    venv=${pair#*:}
    "$venv/bin/python" tests/real-engine/engine_flags.py "$engine" "$tmp/$engine.json" 2>"$tmp/$engine.log" \
        || { cat "$tmp/$engine.log" >&2; exit 1; }
    version=$("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$tmp/$engine.json")
    mv "$tmp/$engine.json" "src/engine/tables/$engine-$version.json"
    echo "wrote src/engine/tables/$engine-$version.json"
done
echo "gen-flags: $(( $(date +%s) - start ))s"
