#!/usr/bin/env python3
"""Write the ONNX backend conformance cases to disk for terafab's Rust runner.

Usage: onnx_testdata.py OUT_DIR    (normally run by scripts/onnx-testdata.sh)

Layout written under OUT_DIR:
    <set>/<case>/model.onnx
    <set>/<case>/test_data_set_N/{input,output}_K.pb
    manifest.json

Sources, most faithful first:
  1. data directories shipped inside the onnx wheel (onnx/backend/test/data/<set>)
     are copied as-is;
  2. cases that exist only as Python test definitions (all of `node`, some of
     `simple`) are serialised here the same way onnx's own
     `backend-test-tools generate-data` does;
  3. `light` models (shipped as light_<name>.onnx + expected outputs) are turned
     into normal cases, with the deterministic input that onnx's test runner
     feeds them (Runner.generate_dummy_data(random=False)).
Nothing is downloaded. `real` only holds URLs of the `light` models, so it is
not written separately.

.pb kinds follow the graph's declared type: TensorProto for tensors,
SequenceProto / OptionalProto / MapProto otherwise (recorded in manifest.json).
Progress and counts go to stderr.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.runner import Runner

DATA_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
MODEL_SETS = ["node", "simple", "pytorch-operator", "pytorch-converted"]
EXPECTED_NODE_CASES = {"1.23.2": 1884}  # sanity check for the pinned version
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7


def log(msg: str) -> None:
    print(f"[onnx-testdata] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Serialising values (mirrors onnx/backend/test/cmd_tools.py::generate_data)
# --------------------------------------------------------------------------
def value_to_proto(value, vi: onnx.ValueInfoProto):
    """Serialise one input/output value according to its declared graph type."""
    t = vi.type
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, vi.name)
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, vi.name)
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, vi.name)
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), vi.name)


def write_case(case_dir: str, model: onnx.ModelProto, data_sets) -> None:
    """Write model.onnx and test_data_set_N/ for an in-memory test case."""
    os.makedirs(case_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    graph_inputs = runtime_inputs(model.graph)
    for n, (inputs, outputs) in enumerate(data_sets):
        ds = os.path.join(case_dir, f"test_data_set_{n}")
        os.makedirs(ds)
        for prefix, values, infos in (
            ("input", inputs, graph_inputs),
            ("output", outputs, list(model.graph.output)),
        ):
            for k, value in enumerate(values):
                with open(os.path.join(ds, f"{prefix}_{k}.pb"), "wb") as f:
                    f.write(value_to_proto(value, infos[k]).SerializeToString())


def runtime_inputs(graph: onnx.GraphProto) -> list:
    """Graph inputs that are fed at run time (old IRs also list initializers)."""
    inits = {i.name for i in graph.initializer}
    return [i for i in graph.input if i.name not in inits]


# --------------------------------------------------------------------------
# The three sources
# --------------------------------------------------------------------------
def copy_shipped(set_name: str, out_dir: str) -> list[str]:
    """Copy every shipped <set>/<case>/ that has a model.onnx; return names."""
    src = os.path.join(DATA_DIR, set_name)
    if not os.path.isdir(src):
        return []
    names = sorted(
        d for d in os.listdir(src) if os.path.isfile(os.path.join(src, d, "model.onnx"))
    )
    for name in names:
        shutil.copytree(os.path.join(src, name), os.path.join(out_dir, set_name, name))
    return names


def collected_cases() -> dict[str, list]:
    """Test cases defined in Python, grouped by set ('node', 'simple', 'real')."""
    import onnx.backend.test.case.model as model_cases
    import onnx.backend.test.case.node as node_cases

    np.random.seed(0)  # some case definitions draw unseeded random inputs
    with warnings.catch_warnings():  # case code deliberately divides by zero etc.
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            cases = node_cases.collect_testcases() + model_cases.collect_testcases()
    by_set: dict[str, list] = {}
    for c in cases:
        by_set.setdefault(c.kind, []).append(c)
    return by_set


def write_light(real_cases: list, out_dir: str) -> dict[str, dict]:
    """Materialise the shipped light_* models as ordinary cases under light/."""
    written = {}
    for c in sorted(real_cases, key=lambda c: c.name):
        stem = os.path.join(DATA_DIR, "light", f"light_{c.model_name}")
        if not os.path.isfile(stem + ".onnx"):
            continue  # would need a download
        model = onnx.load(stem + ".onnx")
        outputs = sorted(glob.glob(stem + "_output_*.pb"))
        if len(outputs) != len(model.graph.output):
            log(f"light/{c.name}: missing expected outputs, skipped")
            continue
        case_dir = os.path.join(out_dir, "light", c.name)
        ds = os.path.join(case_dir, "test_data_set_0")
        os.makedirs(ds)
        shutil.copy(stem + ".onnx", os.path.join(case_dir, "model.onnx"))
        for k, vi in enumerate(runtime_inputs(model.graph)):
            x = Runner.generate_dummy_data(vi, seed=0, name=c.model_name, random=False)
            with open(os.path.join(ds, f"input_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(x, vi.name).SerializeToString())
        for k in range(len(outputs)):
            shutil.copy(f"{stem}_output_{k}.pb", os.path.join(ds, f"output_{k}.pb"))
        written[c.name] = {"rtol": c.rtol, "atol": c.atol}
    return written


# --------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------
def describe_type(tp: onnx.TypeProto) -> dict:
    """{'kind', 'elem_type' (innermost tensor type), 'type' (ONNX notation)}."""
    which = tp.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        tt = getattr(tp, which)
        elem = TensorProto.DataType.Name(tt.elem_type)
        kind = "tensor" if which == "tensor_type" else "sparse_tensor"
        d = {"kind": kind, "elem_type": elem, "type": f"{kind}({elem.lower()})"}
        if tt.HasField("shape"):
            d["shape"] = [
                x.dim_value if x.HasField("dim_value") else (x.dim_param or None)
                for x in tt.shape.dim
            ]
        return d
    if which in ("sequence_type", "optional_type"):
        inner = describe_type(getattr(tp, which).elem_type)
        kind = which.split("_")[0]
        word = "seq" if kind == "sequence" else "optional"
        return {"kind": kind, "elem_type": inner["elem_type"],
                "type": f"{word}({inner['type']})"}
    if which == "map_type":
        key = TensorProto.DataType.Name(tp.map_type.key_type)
        val = describe_type(tp.map_type.value_type)
        return {"kind": "map", "key_type": key, "elem_type": val["elem_type"],
                "type": f"map({key.lower()},{val['type']})"}
    return {"kind": "unknown", "elem_type": None, "type": "unknown"}


def manifest_entry(set_name: str, case_dir: str, source: str, tol: dict) -> dict:
    """Describe one on-disk case; the model and .pb files are the ground truth."""
    model = onnx.load(os.path.join(case_dir, "model.onnx"), load_external_data=False)
    sets = sorted(glob.glob(os.path.join(case_dir, "test_data_set_*")))
    n_in = len(glob.glob(os.path.join(sets[0], "input_*.pb"))) if sets else 0
    n_out = len(glob.glob(os.path.join(sets[0], "output_*.pb"))) if sets else 0
    io = lambda vis: [{"name": v.name, **describe_type(v.type)} for v in vis]  # noqa: E731
    return {
        "set": set_name,
        "name": os.path.basename(case_dir),
        "source": source,
        "data_sets": len(sets),
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "rtol": tol.get("rtol", DEFAULT_RTOL),
        "atol": tol.get("atol", DEFAULT_ATOL),
        "inputs": io(runtime_inputs(model.graph)[:n_in]),
        "outputs": io(list(model.graph.output)[:n_out]),
    }


# --------------------------------------------------------------------------
def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    log(f"onnx {onnx.__version__}, numpy {np.__version__}; shipped data: {DATA_DIR}")

    sources: dict[tuple[str, str], str] = {}  # (set, case) -> shipped|generated
    tolerances: dict[tuple[str, str], dict] = {}

    # 1. shipped data directories
    for s in MODEL_SETS:
        for name in copy_shipped(s, out_dir):
            sources[(s, name)] = "shipped"

    # 2. Python-defined cases that were not shipped
    log("collecting Python-defined test cases (takes ~30 s)...")
    collected = collected_cases()
    for s in MODEL_SETS:
        for c in collected.get(s, []):
            if (s, c.name) in sources:
                continue
            write_case(os.path.join(out_dir, s, c.name), c.model, c.data_sets)
            sources[(s, c.name)] = "generated"
            tolerances[(s, c.name)] = {"rtol": c.rtol, "atol": c.atol}

    # 3. light models, with the runner's deterministic dummy inputs
    for name, tol in write_light(collected.get("real", []), out_dir).items():
        sources[("light", name)] = "shipped+generated-inputs"
        tolerances[("light", name)] = tol

    # Manifest and per-set report
    cases = [
        manifest_entry(s, os.path.join(out_dir, s, n), src, tolerances.get((s, n), {}))
        for (s, n), src in sorted(sources.items())
    ]
    counts: dict[str, dict[str, int]] = {}
    for c in cases:
        per = counts.setdefault(c["set"], {})
        per[c["source"]] = per.get(c["source"], 0) + 1
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"onnx_version": onnx.__version__, "counts": counts, "cases": cases},
                  f, indent=1, sort_keys=True)

    for s, per in sorted(counts.items()):
        detail = ", ".join(f"{v} {k}" for k, v in sorted(per.items()))
        log(f"{s:18s} {sum(per.values()):5d} cases ({detail})")
    log(f"total              {len(cases):5d} cases")
    n_node = sum(counts.get("node", {}).values())
    expected = EXPECTED_NODE_CASES.get(onnx.__version__)
    if expected is not None and n_node != expected:
        log(f"ERROR: expected {expected} node cases for onnx {onnx.__version__}, got {n_node}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
