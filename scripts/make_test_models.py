"""Write the small models of the stage snapshot tests (testsuite/tests/stages.rs).

Run with the venv of scripts/onnx-testdata.sh (onnx 1.23.2 and numpy):

    ~/.cache/terafab/venv-onnx-1.23.2/bin/python scripts/make_test_models.py

For each model NAME it writes, into testsuite/models/:

- NAME.onnx: the model, built with onnx.helper the way exporters write it (Constant nodes for
  scalars and shapes, opset 17), with small deterministic weights (seeded), so the files stay
  commit-sized and the snapshots readable;
- NAME_input.npy: one input for it;
- NAME_expected.npy: its output, computed by onnx's reference evaluator
  (onnx.reference.ReferenceEvaluator), so the tests need no Python at run time.

The models: `mlp` (Gemm 8->16, ReLU, Gemm 16->4), `cnn_bn` (Conv 3x3, BatchNormalization, ReLU,
MaxPool 2x2 on [1,4,8,8]), `resnet_bottleneck` (1x1-3x3-1x1 convs, each with BatchNormalization,
ReLUs, the residual Add and a last ReLU on [1,8,6,6]) and `transformer_block` (a post-norm
encoder block on [1,4,8]: 2-head self-attention written with MatMul/Reshape/Transpose/Softmax,
LayerNormalization, a GELU feed-forward 8->16->8 with GELU as the erf formula).
"""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OUT = pathlib.Path(__file__).resolve().parent.parent / "testsuite" / "models"
OPSET = 17


def weight(rng, shape, scale):
    """A deterministic f32 weight, rounded to 1/64 so the text of small constants stays short."""
    return (np.round(rng.standard_normal(shape) * scale * 64) / 64).astype(np.float32)


def const(name, value):
    """A Constant node, as exporters emit scalars and shapes."""
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(value, name))


def save(name, nodes, inputs, outputs, inits, x):
    """Check the model, then write it with its input and the reference evaluator's output."""
    graph = helper.make_graph(
        nodes,
        name,
        inputs,
        outputs,
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="terafab test models"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, OUT / f"{name}.onnx")
    (y,) = ReferenceEvaluator(model).run(None, {inputs[0].name: x})
    np.save(OUT / f"{name}_input.npy", x)
    np.save(OUT / f"{name}_expected.npy", y.astype(np.float32))
    print("wrote", OUT / f"{name}.onnx", f"({len(nodes)} nodes), output {y.shape}")


def bn_params(rng, prefix, c):
    """BatchNormalization scale, bias, running mean and (positive) running variance."""
    return {
        f"{prefix}_scale": (1 + weight(rng, c, 0.2)).astype(np.float32),
        f"{prefix}_bias": weight(rng, c, 0.1),
        f"{prefix}_mean": weight(rng, c, 0.1),
        f"{prefix}_var": (0.5 + np.abs(weight(rng, c, 0.5))).astype(np.float32),
    }


def bn(prefix, x, y):
    return helper.make_node(
        "BatchNormalization",
        [x, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean", f"{prefix}_var"],
        [y],
        name=prefix,
        epsilon=1e-5,
    )


def mlp():
    rng = np.random.default_rng(1)
    inits = {
        # Gemm with transB=1, as torch.nn.Linear exports: weights are [out, in].
        "fc1_w": weight(rng, (16, 8), 0.35),
        "fc1_b": weight(rng, 16, 0.1),
        "fc2_w": weight(rng, (4, 16), 0.25),
        "fc2_b": weight(rng, 4, 0.1),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "fc1_w", "fc1_b"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["a"], name="relu1"),
        helper.make_node("Gemm", ["a", "fc2_w", "fc2_b"], ["y"], name="fc2", transB=1),
    ]
    x = rng.standard_normal((2, 8)).astype(np.float32)
    save(
        "mlp",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        inits,
        x,
    )


def cnn_bn():
    rng = np.random.default_rng(2)
    inits = {"conv_w": weight(rng, (8, 4, 3, 3), 0.25)}
    inits.update(bn_params(rng, "bn", 8))
    nodes = [
        # No conv bias: exporters drop it when batch-norm follows.
        helper.make_node(
            "Conv", ["x", "conv_w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        bn("bn", "c", "n"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    save(
        "cnn_bn",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])],
        inits,
        x,
    )


def resnet_bottleneck():
    rng = np.random.default_rng(3)
    inits = {
        "conv1_w": weight(rng, (4, 8, 1, 1), 0.35),
        "conv2_w": weight(rng, (4, 4, 3, 3), 0.2),
        "conv3_w": weight(rng, (8, 4, 1, 1), 0.35),
    }
    for i, c in [(1, 4), (2, 4), (3, 8)]:
        inits.update(bn_params(rng, f"bn{i}", c))
    nodes = [
        helper.make_node("Conv", ["x", "conv1_w"], ["c1"], name="conv1", kernel_shape=[1, 1]),
        bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "conv2_w"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        bn("bn2", "c2", "n2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "conv3_w"], ["c3"], name="conv3", kernel_shape=[1, 1]),
        bn("bn3", "c3", "n3"),
        helper.make_node("Add", ["n3", "x"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["y"], name="relu3"),
    ]
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    save(
        "resnet_bottleneck",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        inits,
        x,
    )


def transformer_block():
    rng = np.random.default_rng(4)
    d, heads, ff, seq = 8, 2, 16, 4
    hd = d // heads
    inits = {}
    for p in ["q", "k", "v", "o"]:
        # MatMul + Add, as torch exports nn.Linear inside attention: weights are [in, out].
        inits[f"{p}_w"] = weight(rng, (d, d), 0.35)
        inits[f"{p}_b"] = weight(rng, d, 0.1)
    inits["ff1_w"] = weight(rng, (d, ff), 0.35)
    inits["ff1_b"] = weight(rng, ff, 0.1)
    inits["ff2_w"] = weight(rng, (ff, d), 0.25)
    inits["ff2_b"] = weight(rng, d, 0.1)
    for ln in ["ln1", "ln2"]:
        inits[f"{ln}_g"] = (1 + weight(rng, d, 0.1)).astype(np.float32)
        inits[f"{ln}_b"] = weight(rng, d, 0.1)

    nodes = [
        const("heads_shape", np.array([1, seq, heads, hd], dtype=np.int64)),
        const("model_shape", np.array([1, seq, d], dtype=np.int64)),
        const("scale", np.array(np.sqrt(hd), dtype=np.float32)),
        const("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32)),
        const("one", np.array(1.0, dtype=np.float32)),
        const("half", np.array(0.5, dtype=np.float32)),
    ]

    def linear(p, x, y):
        nodes.append(helper.make_node("MatMul", [x, f"{p}_w"], [f"{p}_mm"], name=f"{p}_matmul"))
        nodes.append(helper.make_node("Add", [f"{p}_mm", f"{p}_b"], [y], name=f"{p}_add"))

    # Self-attention: project, split heads ([1,4,8] -> [1,4,2,4] -> [1,2,4,4]), scaled dot
    # product, softmax, merge heads, output projection.
    for p in ["q", "k", "v"]:
        linear(p, "x", p)
        nodes.append(helper.make_node("Reshape", [p, "heads_shape"], [f"{p}_split"], name=f"{p}_reshape"))
        perm = [0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]
        nodes.append(
            helper.make_node("Transpose", [f"{p}_split"], [f"{p}_heads"], name=f"{p}_transpose", perm=perm)
        )
    nodes += [
        helper.make_node("MatMul", ["q_heads", "k_heads"], ["scores"], name="qk"),
        helper.make_node("Div", ["scores", "scale"], ["scaled"], name="scale_scores"),
        helper.make_node("Softmax", ["scaled"], ["attn"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["attn", "v_heads"], ["ctx_heads"], name="attn_v"),
        helper.make_node("Transpose", ["ctx_heads"], ["ctx_split"], name="merge_transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_split", "model_shape"], ["ctx"], name="merge_reshape"),
    ]
    linear("o", "ctx", "attn_out")
    nodes += [
        helper.make_node("Add", ["x", "attn_out"], ["res1"], name="residual1"),
        helper.make_node(
            "LayerNormalization", ["res1", "ln1_g", "ln1_b"], ["h1"], name="ln1", axis=-1, epsilon=1e-5
        ),
    ]
    # Feed-forward with GELU as exporters write it: 0.5 * x * (1 + erf(x / sqrt(2))).
    linear("ff1", "h1", "f1")
    nodes += [
        helper.make_node("Div", ["f1", "sqrt2"], ["gelu_div"], name="gelu_div"),
        helper.make_node("Erf", ["gelu_div"], ["gelu_erf"], name="gelu_erf"),
        helper.make_node("Add", ["gelu_erf", "one"], ["gelu_add"], name="gelu_add"),
        helper.make_node("Mul", ["f1", "gelu_add"], ["gelu_mul"], name="gelu_mul"),
        helper.make_node("Mul", ["gelu_mul", "half"], ["gelu"], name="gelu_half"),
    ]
    linear("ff2", "gelu", "f2")
    nodes += [
        helper.make_node("Add", ["h1", "f2"], ["res2"], name="residual2"),
        helper.make_node(
            "LayerNormalization", ["res2", "ln2_g", "ln2_b"], ["y"], name="ln2", axis=-1, epsilon=1e-5
        ),
    ]
    x = rng.standard_normal((1, seq, d)).astype(np.float32)
    save(
        "transformer_block",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, d])],
        inits,
        x,
    )


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    mlp()
    cnn_bn()
    resnet_bottleneck()
    transformer_block()
