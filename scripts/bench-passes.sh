#!/usr/bin/env bash
# The pass pipeline benchmark: `terafab bench` (release build) on the stage-test models and a
# ResNet-50-sized graph, with the default pipeline and with equality saturation.
#
#   scripts/bench-passes.sh [--repeat N] [PIPELINE...]
#
# - The Python venv with the pinned onnx is the one of scripts/onnx-testdata.sh (it is called
#   to make sure the venv exists; its conformance cases are cached after the first run).
# - The ResNet-50 graph is written once by scripts/make_resnet50.py to
#   $TERAFAB_CACHE/models/resnet50.onnx (TERAFAB_CACHE defaults to ~/.cache/terafab; ~100 MB,
#   never committed) and reused while it exists.
# - terafab is built with `cargo build --release -p terafab`.
# - Pipelines default to `default` and `default,eqsat,default,fuse`; --repeat defaults to 5.
# The tables go to stdout, progress to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${TERAFAB_CACHE:-$HOME/.cache/terafab}"
resnet="$cache/models/resnet50.onnx"
log() { echo "[bench-passes] $*" >&2; }

repeat=5
pipelines=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --repeat)
        [[ $# -ge 2 ]] || { log "--repeat needs a value"; exit 2; }
        repeat=$2
        shift 2
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        pipelines+=("$1")
        shift
        ;;
    esac
done
[[ ${#pipelines[@]} -gt 0 ]] || pipelines=(default default,eqsat,default,fuse)

# The venv: scripts/onnx-testdata.sh creates (or checks) it; its onnx version is the one
# pinned there.
onnx_version="$(sed -n 's/^ONNX_VERSION=//p' "$here/onnx-testdata.sh")"
[[ -n $onnx_version ]] || { log "cannot read ONNX_VERSION from onnx-testdata.sh"; exit 1; }
TERAFAB_CACHE="$cache" "$here/onnx-testdata.sh" >/dev/null
python="$cache/venv-onnx-$onnx_version/bin/python"

if [[ -f $resnet ]]; then
    log "using $resnet"
else
    log "writing $resnet"
    "$python" "$here/make_resnet50.py" "$resnet" >&2
fi

cd "$root"
log "cargo build --release -p terafab"
cargo build --release -p terafab >&2
terafab=target/release/terafab

models=()
for m in mlp cnn_bn resnet_bottleneck transformer_block; do
    models+=("testsuite/models/$m.onnx")
done
models+=("$resnet")

log "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
for p in "${pipelines[@]}"; do
    "$terafab" bench "${models[@]}" --passes "$p" --repeat "$repeat" --dim N=1
    echo
done
