"""Write a ResNet-50-sized ONNX graph for the pass benchmark (scripts/bench-passes.sh).

Run with the venv of scripts/onnx-testdata.sh (onnx 1.23.2 and numpy):

    ~/.cache/terafab/venv-onnx-1.23.2/bin/python scripts/make_resnet50.py [OUT.onnx] [--batch N]

The graph is the ResNet-50 v1.5 topology, built with onnx.helper the way exporters write it
before any optimization (opset 17):

- stem: Conv 7x7/2 (3->64, pad 3), BatchNormalization, Relu, MaxPool 3x3/2 (pad 1);
- four stages of bottleneck blocks, [3, 4, 6, 3] blocks of widths 64, 128, 256, 512 (outputs 4x
  wider): Conv 1x1, Conv 3x3 (stride 2 in the first block of stages 2-4: the v1.5 placement),
  Conv 1x1, each followed by its own BatchNormalization node (not folded into the conv), Relu
  after the first two; the first block of each stage has a projection shortcut (Conv 1x1 with
  the block's stride, BatchNormalization); the residual Add and a Relu end each block;
- head: GlobalAveragePool, Flatten, Gemm 2048->1000 (transB=1).

The weights (about 25.6M f32 values, ~100 MB) are random from a fixed numpy seed (He-scaled
convs, BatchNormalization statistics near identity), so every run writes the same bytes. The
input is `data: f32[N,3,224,224]` with a symbolic batch dim `N` (give it a value with
`terafab ... --dim N=1`), or a fixed batch with `--batch`; the output is `logits: f32[N,1000]`.

The default output is ~/.cache/terafab/models/resnet50.onnx (the model is never committed); the
file is written next to its destination and renamed into place, so an interrupted run leaves no
partial model behind.
"""

import argparse
import os
import pathlib
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SEED = 50
STAGES = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]  # width, blocks, stride
EXPANSION = 4
CLASSES = 1000
DEFAULT_OUT = pathlib.Path.home() / ".cache" / "terafab" / "models" / "resnet50.onnx"


class Builder:
    """Collects nodes and initializers; every name is unique."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, name, x, cin, cout, k, stride, pad):
        """Conv without bias (the BatchNormalization after it has one), He-scaled weights."""
        fan_in = cin * k * k
        w = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(
            np.sqrt(2.0 / fan_in)
        )
        self.init(f"{name}.weight", w)
        y = f"{name}.out"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.weight"],
                [y],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        return y

    def bn(self, name, x, c):
        """BatchNormalization with random statistics near identity (positive variance)."""
        r = self.rng
        self.init(f"{name}.scale", 1 + 0.1 * r.standard_normal(c, dtype=np.float32))
        self.init(f"{name}.bias", 0.1 * r.standard_normal(c, dtype=np.float32))
        self.init(f"{name}.mean", 0.1 * r.standard_normal(c, dtype=np.float32))
        self.init(f"{name}.var", 0.5 + np.abs(r.standard_normal(c, dtype=np.float32)) * 0.5)
        y = f"{name}.out"
        inputs = [x] + [f"{name}.{p}" for p in ("scale", "bias", "mean", "var")]
        self.nodes.append(
            helper.make_node("BatchNormalization", inputs, [y], name=name, epsilon=1e-5, momentum=0.9)
        )
        return y

    def op(self, op, name, inputs, **attrs):
        y = f"{name}.out"
        self.nodes.append(helper.make_node(op, inputs, [y], name=name, **attrs))
        return y

    def conv_bn(self, name, x, cin, cout, k, stride, pad, relu):
        y = self.bn(f"{name}.bn", self.conv(f"{name}.conv", x, cin, cout, k, stride, pad), cout)
        return self.op("Relu", f"{name}.relu", [y]) if relu else y

    def bottleneck(self, name, x, cin, width, stride):
        cout = width * EXPANSION
        y = self.conv_bn(f"{name}.a", x, cin, width, 1, 1, 0, relu=True)
        y = self.conv_bn(f"{name}.b", y, width, width, 3, stride, 1, relu=True)
        y = self.conv_bn(f"{name}.c", y, width, cout, 1, 1, 0, relu=False)
        if stride != 1 or cin != cout:
            shortcut = self.conv_bn(f"{name}.proj", x, cin, cout, 1, stride, 0, relu=False)
        else:
            shortcut = x
        y = self.op("Add", f"{name}.add", [y, shortcut])
        return self.op("Relu", f"{name}.out", [y])


def build(batch, seed=SEED):
    b = Builder(seed)
    x = b.conv_bn("stem", "data", 3, 64, 7, 2, 3, relu=True)
    x = b.op("MaxPool", "stem.pool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for s, (width, blocks, stride) in enumerate(STAGES, start=1):
        for i in range(blocks):
            x = b.bottleneck(f"layer{s}.{i}", x, cin, width, stride if i == 0 else 1)
            cin = width * EXPANSION
    x = b.op("GlobalAveragePool", "head.pool", [x])
    x = b.op("Flatten", "head.flatten", [x], axis=1)
    w = b.rng.standard_normal((CLASSES, cin), dtype=np.float32) * np.float32(np.sqrt(1.0 / cin))
    b.init("fc.weight", w)
    b.init("fc.bias", np.zeros(CLASSES, dtype=np.float32))
    b.nodes.append(
        helper.make_node("Gemm", [x, "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)
    )
    n = batch if batch is not None else "N"
    graph = helper.make_graph(
        b.nodes,
        "resnet50",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [n, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, CLASSES])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="terafab benchmark models"
    )
    model.ir_version = 8
    return model


def save_atomic(model, out):
    """Check the model, then write it next to `out` and rename it into place."""
    onnx.checker.check_model(model, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", type=pathlib.Path, default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    p.add_argument("--batch", type=int, default=None, help="a fixed batch size instead of the symbolic dim N")
    args = p.parse_args()
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be at least 1")
    model = build(args.batch)
    out = args.out.expanduser()
    save_atomic(model, out)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({len(model.graph.node)} nodes, {params} parameters, {size:.1f} MB)")


if __name__ == "__main__":
    main()
