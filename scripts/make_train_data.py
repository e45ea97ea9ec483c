"""Write the datasets and models of the training tests (cli/tests/train.rs) and benchmarks.

Run with the venv of scripts/onnx-testdata.sh (onnx 1.23.2 and numpy):

    ~/.cache/terafab/venv-onnx-1.23.2/bin/python scripts/make_train_data.py

Into testsuite/models/train/ (small enough to commit; seeded, so reruns write the same bytes):

- `blobs_x.npy` f32[512, 8] and `blobs_y.npy` i64[512]: 4 Gaussian blobs (unit variance around
  centers 2.5 apart) in 8 dimensions; `mlp.onnx`: Gemm 8->32, ReLU, Gemm 32->4 (batch dim `N`).
- `images_x.npy` f32[256, 1, 8, 8] and `images_y.npy` i64[256]: 8x8 images of 4 classes (a
  horizontal bar, a vertical bar, a diagonal, a square outline, at random positions, plus
  noise); `cnn.onnx`: Conv 1->4 3x3 pad 1, ReLU, MaxPool 2x2, Flatten, Gemm 64->4 (batch `N`).
- `seq_x.npy` f32[256, 4, 8] and `seq_y.npy` i64[256]: sequences of 4 tokens of 8 features;
  the class (2) is whether the first feature summed over the sequence is positive;
  `encoder.onnx`: a one-head self-attention block with a residual and LayerNormalization, a
  ReLU feed-forward 8->16->8 with a residual, the mean over the sequence and a Gemm 8->2.
"""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = pathlib.Path(__file__).resolve().parent.parent / "testsuite" / "models" / "train"
OPSET = 17


def init(rng, name, shape, scale):
    return numpy_helper.from_array(
        (rng.standard_normal(shape) * scale).astype(np.float32), name
    )


def save(model, name):
    onnx.checker.check_model(model)
    onnx.save(model, OUT / name)


def blobs(rng):
    centers = rng.standard_normal((4, 8)) * 2.5
    y = rng.integers(0, 4, 512)
    x = centers[y] + rng.standard_normal((512, 8))
    np.save(OUT / "blobs_x.npy", x.astype(np.float32))
    np.save(OUT / "blobs_y.npy", y.astype(np.int64))
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], transB=1),
    ]
    inits = [
        init(rng, "w1", (32, 8), 0.35),
        init(rng, "b1", (32,), 0.0),
        init(rng, "w2", (4, 32), 0.25),
        init(rng, "b2", (4,), 0.0),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]), "mlp.onnx")


def images(rng):
    n = 256
    y = rng.integers(0, 4, n)
    x = rng.standard_normal((n, 1, 8, 8)) * 0.3
    for i in range(n):
        r, c = rng.integers(1, 6, 2)
        if y[i] == 0:
            x[i, 0, r, 1:7] += 1.0
        elif y[i] == 1:
            x[i, 0, 1:7, c] += 1.0
        elif y[i] == 2:
            for k in range(6):
                x[i, 0, 1 + k, 1 + k] += 1.0
        else:
            x[i, 0, r - 1 : r + 2, c - 1 : c + 2] += 1.0
            x[i, 0, r, c] -= 1.0
    np.save(OUT / "images_x.npy", x.astype(np.float32))
    np.save(OUT / "images_y.npy", y.astype(np.int64))
    nodes = [
        helper.make_node("Conv", ["x", "wc", "bc"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    inits = [
        init(rng, "wc", (4, 1, 3, 3), 0.4),
        init(rng, "bc", (4,), 0.0),
        init(rng, "wf", (4, 64), 0.15),
        init(rng, "bf", (4,), 0.0),
    ]
    g = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]), "cnn.onnx")


def encoder(rng):
    n, s, d = 256, 4, 8
    x = rng.standard_normal((n, s, d))
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    np.save(OUT / "seq_x.npy", x.astype(np.float32))
    np.save(OUT / "seq_y.npy", y)
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s1"]),
        helper.make_node("Softmax", ["s1"], ["att"], axis=-1),
        helper.make_node("MatMul", ["att", "v"], ["o0"]),
        helper.make_node("MatMul", ["o0", "wo"], ["o"]),
        helper.make_node("Add", ["x", "o"], ["r1"]),
        helper.make_node("LayerNormalization", ["r1", "g1", "be1"], ["n1"], axis=-1),
        helper.make_node("MatMul", ["n1", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["f0"]),
        helper.make_node("Add", ["f0", "b2"], ["f1"]),
        helper.make_node("Add", ["n1", "f1"], ["r2"]),
        helper.make_node("ReduceMean", ["r2"], ["m"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["m", "wc", "bc"], ["logits"], transB=1),
    ]
    inits = [
        init(rng, "wq", (d, d), 0.3),
        init(rng, "wk", (d, d), 0.3),
        init(rng, "wv", (d, d), 0.3),
        init(rng, "wo", (d, d), 0.3),
        numpy_helper.from_array(np.ones(d, np.float32), "g1"),
        numpy_helper.from_array(np.zeros(d, np.float32), "be1"),
        init(rng, "w1", (d, 16), 0.3),
        numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
        init(rng, "w2", (16, d), 0.3),
        numpy_helper.from_array(np.zeros(d, np.float32), "b2"),
        init(rng, "wc", (2, d), 0.3),
        numpy_helper.from_array(np.zeros(2, np.float32), "bc"),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(d), np.float32), "scale"),
    ]
    g = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", s, d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]), "encoder.onnx")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    blobs(rng)
    images(rng)
    encoder(rng)


if __name__ == "__main__":
    main()
