"""Write the ONNX models of the onnxruntime comparison benchmark (scripts/bench-ort.sh).

Run with the venv of scripts/onnx-testdata.sh (onnx 1.23.2 and numpy):

    ~/.cache/terafab/venv-onnx-1.23.2/bin/python scripts/make_bench_models.py [DIR]
        [--only NAME,NAME..] [--vgg-size PIXELS]

DIR defaults to $TERAFAB_CACHE/models/bench (TERAFAB_CACHE defaults to ~/.cache/terafab); the
models are never committed. Every model is f32 with static shapes and batch 1, built with
onnx.helper the way exporters write it (opset 17, no framework needed), with random weights from
a fixed numpy seed, so every run writes the same bytes:

- mlp.onnx: x f32[1,1024] -> MatMul+Add 1024->2048, Relu, MatMul+Add 2048->2048, Relu,
  Gemm 2048->1000 (transB=1) -> y f32[1,1000]; ~8.4M parameters, memory bound at batch 1.
- cnn.onnx: input f32[1,3,64,64] -> Conv 3->32 3x3 pad 1, BatchNormalization, Relu, MaxPool 2,
  Conv 32->64 3x3 pad 1, BatchNormalization, Relu, MaxPool 2, Conv 64->128 3x3 pad 1 (with
  bias), Relu, GlobalAveragePool, Flatten, Gemm 128->10 -> logits f32[1,10].
- transformer.onnx: one post-norm encoder block on x f32[1,128,256] (4 heads of 64, FFN 1024):
  Q/K/V MatMul+Add, Reshape/Transpose to heads, MatMul Q K^T, Div by sqrt(64), Softmax, MatMul V,
  Transpose/Reshape to merge the heads, output projection MatMul+Add, residual Add,
  LayerNormalization, FFN MatMul+Add, GELU written as 0.5*x*(1+Erf(x/sqrt(2))), MatMul+Add,
  residual Add, LayerNormalization -> y f32[1,128,256].
- resnet.onnx: ResNet-50 v1.5 on data f32[1,3,224,224] -> logits f32[1,1000], written by
  scripts/make_resnet50.py's `build` with batch 1 (so the batch is static).
- vgg.onnx: the VGG-16 convolution stacks without VGG's fifth block: 3x3 Conv (pad 1) + Relu
  with widths 64,64, MaxPool 2, 128,128, MaxPool 2, 256,256,256, MaxPool 2, 512,512,512,
  MaxPool 2; then GlobalAveragePool, Flatten, Gemm 512->1000 (instead of VGG's 4096-wide fully
  connected layers, which alone would hold ~120M parameters) on input f32[1,3,S,S] with S from
  --vgg-size (default 112: ~7 GFLOP, a few hundred ms on one core; 224 is ~28 GFLOP).

Each model passes onnx.checker.check_model (full check, shape inference included) before it is
saved; files are written next to their destination and renamed into place, so an interrupted
run leaves no partial model behind. One line per model written goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The sibling script (this directory is on sys.path when a script here runs).
from make_resnet50 import build as build_resnet50
from make_resnet50 import save_atomic

OPSET = 17
IR_VERSION = 8
SEED = 2024
MODEL_NAMES = ("mlp", "cnn", "transformer", "resnet", "vgg")
PRODUCER = "terafab benchmark models"


class Builder:
    """Collects the nodes and initializers of one graph, with a seeded random generator.

    Every helper returns the name of the value it defines; node and value names derive from
    the `name` given, which must be unique within the graph.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        """Add an initializer (f32 unless the array is integer) and return its name."""
        if not np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def randn(self, shape: tuple[int, ...], scale: float) -> np.ndarray:
        """Standard normal f32 values times `scale`."""
        return self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

    def op(self, op_type: str, name: str, inputs: list[str], **attrs: object) -> str:
        """Add a node with one output, named `<name>.out`."""
        out = f"{name}.out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def scalar(self, name: str, value: float) -> str:
        """A 0-d f32 initializer (a scalar operand of a broadcasting op)."""
        return self.init(name, np.array(value, dtype=np.float32))

    def linear(self, name: str, x: str, n_in: int, n_out: int) -> str:
        """MatMul by a [n_in, n_out] weight, then Add of a bias: the exporters' linear layer."""
        w = self.init(f"{name}.weight", self.randn((n_in, n_out), np.sqrt(2.0 / n_in)))
        b = self.init(f"{name}.bias", self.randn((n_out,), 0.05))
        return self.op("Add", f"{name}.add", [self.op("MatMul", f"{name}.matmul", [x, w]), b])

    def gemm(self, name: str, x: str, n_in: int, n_out: int) -> str:
        """Gemm with a [n_out, n_in] weight (transB=1) and a bias, as a classifier head."""
        w = self.init(f"{name}.weight", self.randn((n_out, n_in), np.sqrt(1.0 / n_in)))
        b = self.init(f"{name}.bias", self.randn((n_out,), 0.05))
        return self.op("Gemm", name, [x, w, b], transB=1)

    def conv(self, name: str, x: str, c_in: int, c_out: int, k: int, bias: bool) -> str:
        """A k x k Conv, stride 1, 'same' padding, He-scaled weights, optionally with a bias."""
        he = np.sqrt(2.0 / (c_in * k * k))
        w = self.init(f"{name}.weight", self.randn((c_out, c_in, k, k), he))
        inputs = [x, w]
        if bias:
            inputs.append(self.init(f"{name}.bias", self.randn((c_out,), 0.05)))
        pad = k // 2
        return self.op("Conv", name, inputs, kernel_shape=[k, k], strides=[1, 1], pads=[pad] * 4)

    def batch_norm(self, name: str, x: str, c: int) -> str:
        """BatchNormalization (inference form) with statistics near identity."""
        params = [
            self.init(f"{name}.scale", 1 + self.randn((c,), 0.1)),
            self.init(f"{name}.bias", self.randn((c,), 0.1)),
            self.init(f"{name}.mean", self.randn((c,), 0.1)),
            self.init(f"{name}.var", 0.5 + np.abs(self.randn((c,), 0.5))),
        ]
        return self.op("BatchNormalization", name, [x, *params], epsilon=1e-5, momentum=0.9)

    def layer_norm(self, name: str, x: str, d: int) -> str:
        """LayerNormalization over the last axis with a random scale and bias."""
        scale = self.init(f"{name}.scale", 1 + self.randn((d,), 0.1))
        bias = self.init(f"{name}.bias", self.randn((d,), 0.1))
        return self.op("LayerNormalization", name, [x, scale, bias], axis=-1, epsilon=1e-5)

    def max_pool2(self, name: str, x: str) -> str:
        """MaxPool 2x2, stride 2."""
        return self.op("MaxPool", name, [x], kernel_shape=[2, 2], strides=[2, 2])

    def model(
        self,
        graph_name: str,
        inputs: list[tuple[str, list[int]]],
        outputs: list[tuple[str, list[int]]],
    ) -> onnx.ModelProto:
        """Wrap the collected nodes into an opset-17 model with f32 inputs and outputs."""
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER
        )
        model.ir_version = IR_VERSION
        return model

    def rename_last(self, output: str) -> str:
        """Give the last node's output the graph output's name."""
        self.nodes[-1].output[0] = output
        return output


def build_mlp(seed: int) -> onnx.ModelProto:
    """The MLP 1024 -> 2048 -> 2048 -> 1000 on x f32[1,1024]."""
    b = Builder(seed)
    h = b.op("Relu", "fc1.relu", [b.linear("fc1", "x", 1024, 2048)])
    h = b.op("Relu", "fc2.relu", [b.linear("fc2", h, 2048, 2048)])
    b.gemm("fc3", h, 2048, 1000)
    b.rename_last("y")
    return b.model("mlp", [("x", [1, 1024])], [("y", [1, 1000])])


def build_cnn(seed: int) -> onnx.ModelProto:
    """The small CNN on input f32[1,3,64,64]: three conv stages, global pool, Gemm to 10."""
    b = Builder(seed)
    h = "input"
    for i, (c_in, c_out) in enumerate([(3, 32), (32, 64)], start=1):
        h = b.conv(f"conv{i}", h, c_in, c_out, 3, bias=False)
        h = b.batch_norm(f"bn{i}", h, c_out)
        h = b.op("Relu", f"relu{i}", [h])
        h = b.max_pool2(f"pool{i}", h)
    h = b.op("Relu", "relu3", [b.conv("conv3", h, 64, 128, 3, bias=True)])
    h = b.op("GlobalAveragePool", "gap", [h])
    h = b.op("Flatten", "flatten", [h], axis=1)
    b.gemm("fc", h, 128, 10)
    b.rename_last("logits")
    return b.model("cnn", [("input", [1, 3, 64, 64])], [("logits", [1, 10])])


def build_transformer(
    seed: int, seq: int = 128, d_model: int = 256, heads: int = 4, d_ff: int = 1024
) -> onnx.ModelProto:
    """One post-norm transformer encoder block on x f32[1,seq,d_model]."""
    b = Builder(seed)
    d_head = d_model // heads
    split = b.init("shape.split_heads", np.array([1, seq, heads, d_head], dtype=np.int64))
    merge = b.init("shape.merge_heads", np.array([1, seq, d_model], dtype=np.int64))

    def heads_of(name: str, perm: list[int]) -> str:
        """Project x, split the last axis into heads and transpose by `perm`."""
        y = b.linear(name, "x", d_model, d_model)
        y = b.op("Reshape", f"{name}.split", [y, split])
        return b.op("Transpose", f"{name}.heads", [y], perm=perm)

    q = heads_of("attn.q", [0, 2, 1, 3])  # [1, heads, seq, d_head]
    k_t = heads_of("attn.k", [0, 2, 3, 1])  # [1, heads, d_head, seq]: K transposed
    v = heads_of("attn.v", [0, 2, 1, 3])
    scores = b.op("MatMul", "attn.scores", [q, k_t])
    sqrt_d_head = b.scalar("attn.sqrt_d_head", float(np.sqrt(d_head)))
    scores = b.op("Div", "attn.scale", [scores, sqrt_d_head])
    probs = b.op("Softmax", "attn.softmax", [scores], axis=-1)
    ctx = b.op("MatMul", "attn.context", [probs, v])
    ctx = b.op("Transpose", "attn.merge_t", [ctx], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", "attn.merge", [ctx, merge])
    attn = b.linear("attn.out", ctx, d_model, d_model)
    h = b.layer_norm("ln1", b.op("Add", "attn.residual", ["x", attn]), d_model)

    f = b.linear("ffn.fc1", h, d_model, d_ff)
    # GELU as exporters write it: 0.5 * x * (1 + Erf(x / sqrt(2)))
    sqrt2 = b.scalar("ffn.gelu.sqrt2", float(np.sqrt(2.0)))
    erf = b.op("Erf", "ffn.gelu.erf", [b.op("Div", "ffn.gelu.div", [f, sqrt2])])
    gelu = b.op("Add", "ffn.gelu.add", [erf, b.scalar("ffn.gelu.one", 1.0)])
    gelu = b.op("Mul", "ffn.gelu.mul", [f, gelu])
    gelu = b.op("Mul", "ffn.gelu.half", [gelu, b.scalar("ffn.gelu.half_c", 0.5)])
    f = b.linear("ffn.fc2", gelu, d_ff, d_model)
    b.layer_norm("ln2", b.op("Add", "ffn.residual", [h, f]), d_model)
    b.rename_last("y")
    return b.model(
        "transformer", [("x", [1, seq, d_model])], [("y", [1, seq, d_model])]
    )


def build_vgg(seed: int, size: int) -> onnx.ModelProto:
    """VGG-16's first four conv blocks on input f32[1,3,size,size], global pool, Gemm to 1000."""
    b = Builder(seed)
    blocks = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512]]
    h, c_in = "input", 3
    for i, widths in enumerate(blocks, start=1):
        for j, c_out in enumerate(widths, start=1):
            h = b.conv(f"block{i}.conv{j}", h, c_in, c_out, 3, bias=True)
            h = b.op("Relu", f"block{i}.relu{j}", [h])
            c_in = c_out
        h = b.max_pool2(f"block{i}.pool", h)
    # A global average pool and one Gemm replace VGG's 25088->4096->4096->1000 classifier.
    h = b.op("GlobalAveragePool", "gap", [h])
    h = b.op("Flatten", "flatten", [h], axis=1)
    b.gemm("fc", h, c_in, 1000)
    b.rename_last("logits")
    return b.model("vgg", [("input", [1, 3, size, size])], [("logits", [1, 1000])])


def describe(path: pathlib.Path) -> str:
    """One line about a written model: node count, parameters, inputs, size on disk."""
    model = onnx.load(path, load_external_data=False)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    ins = ", ".join(
        f"{i.name}[{','.join(str(d.dim_value) for d in i.type.tensor_type.shape.dim)}]"
        for i in model.graph.input
    )
    size = path.stat().st_size / 1e6
    nodes = len(model.graph.node)
    return f"wrote {path} ({nodes} nodes, {params} parameters, input {ins}, {size:.1f} MB)"


def default_dir() -> pathlib.Path:
    """$TERAFAB_CACHE/models/bench, TERAFAB_CACHE defaulting to ~/.cache/terafab."""
    cache = os.environ.get("TERAFAB_CACHE") or str(pathlib.Path.home() / ".cache" / "terafab")
    return pathlib.Path(cache).expanduser() / "models" / "bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: output dir, which models, the VGG input size."""
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dir", nargs="?", type=pathlib.Path, default=None,
        help=f"output directory (default {default_dir()})",
    )
    p.add_argument(
        "--only", default=",".join(MODEL_NAMES), metavar="NAME,NAME..",
        help=f"write only these models (default: all of {','.join(MODEL_NAMES)})",
    )
    p.add_argument(
        "--vgg-size", type=int, default=112, metavar="PIXELS",
        help="height and width of vgg.onnx's input (default 112; a multiple of 16)",
    )
    p.add_argument(
        "--seed", type=int, default=SEED, help=f"numpy seed of the weights (default {SEED})"
    )
    args = p.parse_args(argv)
    args.only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in MODEL_NAMES]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_NAMES)}")
    if args.vgg_size < 16 or args.vgg_size % 16:
        p.error("--vgg-size must be a positive multiple of 16 (four 2x2 pools)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Write the selected models into the output directory, one line each."""
    args = parse_args(argv)
    out_dir = (args.dir or default_dir()).expanduser()
    builders: dict[str, Callable[[], onnx.ModelProto]] = {
        "mlp": lambda: build_mlp(args.seed),
        "cnn": lambda: build_cnn(args.seed + 1),
        "transformer": lambda: build_transformer(args.seed + 2),
        "resnet": lambda: build_resnet50(1),
        "vgg": lambda: build_vgg(args.seed + 4, args.vgg_size),
    }
    for name in args.only:
        path = out_dir / f"{name}.onnx"
        save_atomic(builders[name](), path)
        print(describe(path), flush=True)


if __name__ == "__main__":
    main()
