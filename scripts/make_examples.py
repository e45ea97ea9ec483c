"""Write the bundled example models (run with the venv of scripts/onnx-testdata.sh).

examples/mlp.onnx: a 2-layer MLP classifier (16 -> 32 -> 10, ReLU, softmax) with a symbolic
batch dim `batch`, deterministic weights; examples/x.npy: a batch of 4 inputs for it; examples/mlp_expected_probs.npy: its outputs computed
with numpy.
"""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = pathlib.Path(__file__).resolve().parent.parent / "examples"
rng = np.random.default_rng(7)
w1 = (rng.standard_normal((16, 32)) / 4).astype(np.float32)
b1 = (rng.standard_normal(32) / 10).astype(np.float32)
w2 = (rng.standard_normal((32, 10)) / 6).astype(np.float32)
b2 = (rng.standard_normal(10) / 10).astype(np.float32)

graph = helper.make_graph(
    [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu1"),
        helper.make_node("MatMul", ["a", "w2"], ["m"], name="fc2"),
        helper.make_node("Add", ["m", "b2"], ["logits"], name="bias2"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ],
    "mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
    [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
    [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="terafab examples")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, out / "mlp.onnx")
x = rng.standard_normal((4, 16)).astype(np.float32)
np.save(out / "x.npy", x)
# The expected output, computed independently with numpy in f64 (tests compare with tolerance).
logits = np.maximum(x.astype(np.float64) @ w1 + b1, 0) @ w2 + b2
e = np.exp(logits - logits.max(axis=-1, keepdims=True))
np.save(out / "mlp_expected_probs.npy", (e / e.sum(axis=-1, keepdims=True)).astype(np.float32))
print("wrote", out / "mlp.onnx", out / "x.npy", out / "mlp_expected_probs.npy")
