#!/usr/bin/env bash
# Installs SGLang 0.5.23's argument parser (not its kernels) for the flag tables and the recipe
# check: a venv outside the repository whose own packages are the sglang wheel and the few
# pure-Python packages it imports at parse time (sglang-requirements.lock, all --no-deps), and
# which sees the vLLM CPU venv's packages (torch, numpy, msgspec, ...) through a .pth file.
# Idempotent: a second run checks a stamp and returns at once.
#
#   tests/real-engine/install-sglang.sh     # install (or confirm) and print the venv path
#
# Where: $AIM_SGLANG_VENV, else ${XDG_CACHE_HOME:-~/.cache}/aim-engine/real-engine/sglang-0.5.23.
# Needs the vLLM venv (tests/real-engine/install.sh, run first). On a CPU-only machine
# `sglang.srt.server_args` imports, `ServerArgs.add_cli_args` builds the parser and
# `ServerArgs.from_cli_args` builds the config object; serving does not work (no kernels).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SGLANG_VERSION=0.5.23
vllm=$("$here/install.sh")
venv=${AIM_SGLANG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/aim-engine/real-engine/sglang-$SGLANG_VERSION}

want=$(cat "$here/install-sglang.sh" "$here/sglang-requirements.lock" "$vllm/.aim-stamp" | sha256sum | cut -d' ' -f1)
if [ -f "$venv/.aim-stamp" ] && [ "$(cat "$venv/.aim-stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    echo "$venv"
    exit 0
fi

start=$(date +%s)
echo "real engine: installing SGLang $SGLANG_VERSION's parser into $venv" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$vllm/bin/python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --no-deps "pip==25.3"
"${pip[@]}" install -q --no-deps -r "$here/sglang-requirements.lock"
# Only now the vLLM venv's packages become visible (appended to sys.path, after our own), so
# pip above never saw, nor replaced, anything of that venv.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
vsite=$("$vllm/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$vsite" > "$site/aim-vllm-venv.pth"

got=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("sglang"))')
[ "$got" = "$SGLANG_VERSION" ] || { echo "real engine: sglang reports $got, want $SGLANG_VERSION" >&2; exit 1; }
echo "$want" > "$venv/.aim-stamp"
echo "real engine: SGLang parser installed in $(( $(date +%s) - start ))s" >&2
echo "$venv"
