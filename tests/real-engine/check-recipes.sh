#!/usr/bin/env bash
# Every built-in recipe, planned by aim-engine for the pinned engine versions on a host of its
# GPU model, then parsed by the real engine's parser and turned into the engine's config
# object (tests/real-engine/check_recipes.py). A multi-node recipe is planned for its leader
# and its last worker (`<id>@rank<R>`), each with its own multi-node flags. A recipe that would stop the engine at start
# fails this script; .ci/run runs it.
#
#   tests/real-engine/check-recipes.sh        # uses target/debug/aim-engine (builds it)
#
# The MI325X, MI355X and MI250X hosts are the MI300X fixture tree with the product's PCI device id,
# gfx target and VRAM written in (the planner reads exactly these files).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
vllm=$(tests/real-engine/install.sh)
sglang=$(tests/real-engine/install-sglang.sh)
cargo build --quiet --bin aim-engine
bin=target/debug/aim-engine
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp" <<'PY'
import os, re, shutil, sys
tmp = sys.argv[1]
src = "tests/fixtures/sysfs/mi300x-8gpu-spx"
# product: (PCI device id, KFD gfx_target_version, VRAM bytes per GPU)
# MI250X: each of the 8 usable GPUs is one GCD (gfx90a) with 64 GiB, as the planner sees it.
products = {
    "mi325x": (0x74A5, 90402, 256 << 30),
    "mi355x": (0x75A3, 90500, 288 << 30),
    "mi250x": (0x7408, 90010, 64 << 30),
}
old_vram = "206141652992"
for name, (dev, gfx, vram) in products.items():
    dst = os.path.join(tmp, name)
    shutil.copytree(src, dst, symlinks=True)
    for folder, _, files in os.walk(dst):
        for f in files:
            p = os.path.join(folder, f)
            if os.path.islink(p):
                continue
            if f in ("device", "properties", "mem_info_vram_total"):
                text = open(p).read()
                new = text.replace("0x74a1", f"0x{dev:04x}")
                new = re.sub(r"^device_id 29857$", f"device_id {dev}", new, flags=re.M)
                new = re.sub(r"^gfx_target_version 90402$", f"gfx_target_version {gfx}", new, flags=re.M)
                new = new.replace(old_vram, str(vram))
                if new != text:
                    open(p, "w").write(new)
PY
ln -s "$PWD/tests/fixtures/sysfs/mi300x-8gpu-spx" "$tmp/mi300x"

# One command per recipe: {"recipe", "argv"} lists per engine.
echo '[]' >"$tmp/vllm.json"
echo '[]' >"$tmp/sglang.json"
fail=0
for f in $(find recipes -name '*.yaml' | sort); do
    rel=${f#recipes/}
    dir=$(dirname "$rel")
    id=$(basename "$rel" .yaml)
    engine=${id%%-*}
    gpu=$(echo "$id" | cut -d- -f2)
    if [ "$dir" = general ]; then
        model=example-org/Example-8B
        id=general/$id
    else
        model=$dir
    fi
    # A recipe over K nodes (`-nodes<K>` in its name) is planned once per role: the leader
    # (rank 0) and the last worker, as a group of K with a leader at 10.0.0.1.
    nodes=$(echo "$id" | sed -n 's/.*-nodes\([0-9]*\)-.*/\1/p')
    ranks=${nodes:+0 $((nodes - 1))}
    for rank in ${ranks:--}; do
        group=() label=$id
        if [ "$rank" != - ]; then
            group=(--nnodes "$nodes" --node-rank "$rank" --leader-addr 10.0.0.1)
            label="$id@rank$rank"
        fi
        if ! HF_HUB_CACHE="$tmp/empty-cache" AIM_LOG_LEVEL=warn "$bin" plan --root "$tmp/$gpu" \
            --builtin-recipes recipes "$model" --recipe "$id" "${group[@]}" --format json \
            >"$tmp/plan.json" 2>"$tmp/err"; then
            echo "FAIL  $engine $label: aim-engine plan: $(tail -1 "$tmp/err")"
            fail=1
            continue
        fi
        python3 -c '
import json, sys
plan, path, recipe = sys.argv[1:4]
cmds = json.load(open(path))
cmds.append({"recipe": recipe, "argv": json.load(open(plan))["command"]["argv"]})
json.dump(cmds, open(path, "w"))
' "$tmp/plan.json" "$tmp/$engine.json" "$label"
    done
done
"$vllm/bin/python" tests/real-engine/check_recipes.py vllm "$tmp/vllm.json" 2> >(grep -v "Triton is installed" >&2) || fail=1
"$sglang/bin/python" tests/real-engine/check_recipes.py sglang "$tmp/sglang.json" || fail=1
echo "check-recipes: $(( $(date +%s) - start ))s"
exit $fail
