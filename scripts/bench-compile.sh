#!/usr/bin/env bash
# terafab's Cranelift backend against its LLVM backend (issue 9's targets: Cranelift compiles
# >= 5x faster, and its code runs within 2.5x of LLVM's), and tiered compilation
# (`--backend auto`), on the models of scripts/bench-ort.sh, in one run.
#
#   scripts/bench-compile.sh [MODEL...] [--threads 1,2] [--iters 10] [--warmup 1] [--no-auto]
#                            [--json-out FILE]
#
# - The models (mlp, cnn, transformer, resnet, vgg) are the ones scripts/bench-ort.sh uses, in
#   $TERAFAB_CACHE/models/bench (TERAFAB_CACHE defaults to ~/.cache/terafab); when one is
#   missing they are written by scripts/make_bench_models.py with the venv of
#   scripts/onnx-testdata.sh (created if needed). MODEL is a model name or an .onnx file.
# - terafab is built with `cargo build --release -p terafab` (in $CARGO_TARGET_DIR, default
#   target/).
# - For each model and thread count: `terafab bench MODEL --backend cranelift|llvm --threads N
#   --iters K --warmup W --json`, then (unless --no-auto) `terafab bench MODEL --backend auto`.
#   Compile time is the backend's (kernel IR to loaded machine code: `backend_ms`); passes and
#   fusion, shared by both, are shown apart. A failure is a table entry, not an abort.
# The markdown tables go to stdout, progress to stderr (scripts/bench_compile.py, plain python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${TERAFAB_CACHE:-$HOME/.cache/terafab}"
models_dir="$cache/models/bench"
log() { echo "[bench-compile] $*" >&2; }

for arg in "$@"; do
    case $arg in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    esac
done

cd "$root"
log "cargo build --release -p terafab"
cargo build --release -p terafab >&2
terafab="${CARGO_TARGET_DIR:-$root/target}/release/terafab"

missing=0
for m in mlp cnn transformer resnet vgg; do
    [[ -f $models_dir/$m.onnx ]] || missing=1
done
if [[ $missing == 1 ]]; then
    onnx_version="$(sed -n 's/^ONNX_VERSION=//p' "$here/onnx-testdata.sh")"
    TERAFAB_CACHE="$cache" "$here/onnx-testdata.sh" >/dev/null
    log "writing the models into $models_dir"
    "$cache/venv-onnx-$onnx_version/bin/python" "$here/make_bench_models.py" "$models_dir" >&2
else
    log "using the models in $models_dir"
fi

exec python3 "$here/bench_compile.py" --models-dir "$models_dir" --terafab "$terafab" "$@"
