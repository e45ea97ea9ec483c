#!/usr/bin/env bash
# The full training check of issue 8 (the test, cli/tests/train.rs, runs fewer tile steps):
# the MLP and the small CNN of scripts/make_train_data.py trained 200 steps (Adam, lr 0.01,
# batch 32) on the interpreter, LLVM (1 and 2 threads), Cranelift, tile f32 and tile bf16 on a 4x4 chip;
# the largest per-step relative loss difference to the interpreter, the final accuracies,
# steps/s and the simulated cycles/utilization per step; the encoder block on every backend;
# and, when the venv of scripts/onnx-testdata.sh has onnxruntime, the trained model loaded and
# run by onnxruntime against terafab's interpreter.
#
#   scripts/train-curves.sh [OUTDIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
cd "$root"
nice -n 10 cargo build --release -q -p terafab
bin=${CARGO_TARGET_DIR:-$root/target}/release/terafab
d=testsuite/models/train
run() { # name model data labels backend-args...
  local name=$1 model=$2 x=$3 y=$4; shift 4
  "$bin" train "$d/$model" --data "$d/$x" --labels "$d/$y" --optimizer adam --lr 0.01 \
    --batch 32 --epochs 1000 --steps 200 --log-json "$out/$name.json" "$@" | tee "$out/$name.txt" | grep -v '^wrote'
}
for m in "mlp mlp.onnx blobs_x.npy blobs_y.npy" "cnn cnn.onnx images_x.npy images_y.npy" \
         "encoder encoder.onnx seq_x.npy seq_y.npy"; do
  set -- $m
  run "$1-interp" "$2" "$3" "$4" --backend interp
  run "$1-llvm1" "$2" "$3" "$4" --backend llvm --threads 1
  run "$1-llvm2" "$2" "$3" "$4" --backend llvm --threads 2
  run "$1-cranelift" "$2" "$3" "$4" --backend cranelift --threads 1
  run "$1-tile-f32" "$2" "$3" "$4" --backend tile --config 4x4 --precision f32
  run "$1-tile-bf16" "$2" "$3" "$4" --backend tile --config 4x4 --precision bf16
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for m in ["mlp", "cnn", "encoder"]:
    ref = json.load(open(f"{out}/{m}-interp.json"))["steps"]
    for b in ["llvm1", "llvm2", "cranelift", "tile-f32", "tile-bf16"]:
        s = json.load(open(f"{out}/{m}-{b}.json"))["steps"]
        rel = max(abs(a["loss"] - c["loss"]) / abs(a["loss"]) for a, c in zip(ref, s))
        acc = lambda st: 100 * sum(x["correct"] for x in st[-16:]) / (32 * 16)
        print(f"{m:8} {b:10} max rel loss diff {rel:.2e}  loss {s[0]['loss']:.4f} -> {s[-1]['loss']:.4f}"
              f"  accuracy (last 16 steps) {acc(s):.2f}% (interp {acc(ref):.2f}%)")
PY
# The written model in onnxruntime.
venv=${TERAFAB_CACHE:-$HOME/.cache/terafab}/venv-onnx-1.23.2
"$bin" train "$d/mlp.onnx" --data "$d/blobs_x.npy" --labels "$d/blobs_y.npy" --optimizer adam \
  --lr 0.01 --batch 32 --steps 50 --backend llvm --out "$out/trained.onnx" >/dev/null
"$bin" run "$out/trained.onnx" --input "x=$d/blobs_x.npy" --backend interp --output-dir "$out/tf" >/dev/null
if "$venv/bin/python" -c "import onnxruntime" 2>/dev/null; then
  "$venv/bin/python" - "$out" "$d" <<'PY'
import sys, numpy as np, onnxruntime as ort
out, d = sys.argv[1], sys.argv[2]
s = ort.InferenceSession(f"{out}/trained.onnx")
y = s.run(None, {"x": np.load(f"{d}/blobs_x.npy")})[0]
t = np.load(f"{out}/tf/logits.npy")
err = np.abs(y - t).max()
acc = (y.argmax(1) == np.load(f"{d}/blobs_y.npy")).mean() * 100
print(f"onnxruntime runs trained.onnx: max |ort - terafab| = {err:.2e}, accuracy {acc:.2f}%")
assert err < 1e-4
PY
else
  echo "onnxruntime not in $venv: skipped (scripts/bench-ort.sh installs it)"
fi
