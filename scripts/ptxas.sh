#!/usr/bin/env bash
# ptxas for the GPU backend's tests (no GPU and no CUDA toolkit needed): the pip wheel
# nvidia-cuda-nvcc-cu12 ships it. Installed once into its own venv under the cache.
#
#   scripts/ptxas.sh           install if needed; prints the path of ptxas
#   scripts/ptxas.sh --find    print the path only if already installed (exit 1 if not)
#
# The GPU tests find it through this script (or $TERAFAB_PTXAS) and assemble the PTX they
# emit with `ptxas -arch=sm_80` and `sm_90`; without it they print SKIPPED and check the rest.
set -euo pipefail

NVCC_VERSION=12.9.86
cache="${TERAFAB_CACHE:-$HOME/.cache/terafab}"
venv="$cache/venv-ptxas-$NVCC_VERSION"
find_ptxas() {
    local p
    p="$(ls "$venv"/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas 2>/dev/null | head -n1)"
    [[ -n $p && -x $p && -f $venv/.terafab-ready ]] && echo "$p"
}

if [[ ${1:-} == --find ]]; then
    find_ptxas || exit 1
    exit 0
fi
if ! find_ptxas >/dev/null; then
    mkdir -p "$cache"
    exec 9>"$venv.lock"
    if command -v flock >/dev/null; then flock 9; fi
    if ! find_ptxas >/dev/null; then
        echo "[ptxas] installing nvidia-cuda-nvcc-cu12==$NVCC_VERSION into $venv" >&2
        rm -rf "$venv"
        "${PYTHON:-python3}" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "nvidia-cuda-nvcc-cu12==$NVCC_VERSION"
        touch "$venv/.terafab-ready"
    fi
fi
find_ptxas
