#!/usr/bin/env bash
# terafab's LLVM backend against onnxruntime: the same models and inputs, timed in one run.
#
#   scripts/bench-ort.sh [MODEL...] [--threads 1,2] [--iters 20] [--min-time 10] [--no-check]
#                        [--json-out FILE]
#
# - The Python venv is the one of scripts/onnx-testdata.sh (it is called to make sure the venv
#   exists); the onnxruntime of ORT_VERSION below (the newest with a CPython 3.11 manylinux
#   x86_64 wheel when it was pinned) is installed into it when missing.
# - The models (mlp, cnn, transformer, resnet, vgg: f32, static shapes, batch 1) are written
#   once by scripts/make_bench_models.py to $TERAFAB_CACHE/models/bench (TERAFAB_CACHE defaults
#   to ~/.cache/terafab; ~170 MB, never committed) and reused while they all exist; delete the
#   directory to write them again.
# - terafab is built with `cargo build --release -p terafab`.
# - Every argument goes to scripts/bench_ort.py (see its --help): MODEL is an .onnx file or a
#   model name (default: all five); for each model and thread count, onnxruntime (ORT_ENABLE_ALL,
#   intra-op threads N) and `terafab bench MODEL --backend llvm --threads N --iters K --json`,
#   then once per model `terafab run --backend llvm` checked against onnxruntime's outputs
#   (np.allclose, rtol 1e-3, atol 1e-4). A terafab failure is a table entry, not an abort.
# The machine and the markdown table go to stdout, progress to stderr.
set -euo pipefail

ORT_VERSION=1.32.0
# onnxruntime's own dependencies, pinned like the venv's (numpy and protobuf are pinned there).
ORT_PINS=("onnxruntime==$ORT_VERSION" flatbuffers==25.12.19 packaging==26.3)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${TERAFAB_CACHE:-$HOME/.cache/terafab}"
models_dir="$cache/models/bench"
log() { echo "[bench-ort] $*" >&2; }

# The venv of scripts/onnx-testdata.sh; its onnx version is the one pinned there.
onnx_version="$(sed -n 's/^ONNX_VERSION=//p' "$here/onnx-testdata.sh")"
[[ -n $onnx_version ]] || { log "cannot read ONNX_VERSION from onnx-testdata.sh"; exit 1; }
python="$cache/venv-onnx-$onnx_version/bin/python"
ort_ok() {
    "$python" -c 'import sys, onnxruntime; sys.exit(onnxruntime.__version__ != sys.argv[1])' \
        "$ORT_VERSION" 2>/dev/null
}

for arg in "$@"; do
    case $arg in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        if ort_ok; then
            printf '\nscripts/bench_ort.py --help:\n\n'
            "$python" "$here/bench_ort.py" --help
        fi
        exit 0
        ;;
    esac
done

# scripts/onnx-testdata.sh creates the venv (or checks it).
TERAFAB_CACHE="$cache" "$here/onnx-testdata.sh" >/dev/null
if ! ort_ok; then
    log "installing ${ORT_PINS[*]} into $(dirname "$(dirname "$python")")"
    "$python" -m pip install --quiet --disable-pip-version-check "${ORT_PINS[@]}" >&2
    ort_ok || { log "onnxruntime $ORT_VERSION does not import after installing it"; exit 1; }
fi

cd "$root"
log "cargo build --release -p terafab"
cargo build --release -p terafab >&2
terafab="$root/target/release/terafab"

missing=0
for m in mlp cnn transformer resnet vgg; do
    [[ -f $models_dir/$m.onnx ]] || missing=1
done
if [[ $missing == 1 ]]; then
    log "writing the models into $models_dir"
    "$python" "$here/make_bench_models.py" "$models_dir" >&2
else
    log "using the models in $models_dir"
fi

exec "$python" "$here/bench_ort.py" --models-dir "$models_dir" --terafab "$terafab" "$@"
