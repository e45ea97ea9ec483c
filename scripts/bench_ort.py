"""Compare terafab's LLVM backend with onnxruntime on the same models, in the same run.

Run with the venv of scripts/onnx-testdata.sh with onnxruntime installed (scripts/bench-ort.sh
does both, builds terafab and writes the models first):

    ~/.cache/terafab/venv-onnx-1.23.2/bin/python scripts/bench_ort.py [MODEL...]
        [--threads 1,2] [--iters 20] [--min-time 10] [--terafab PATH] [--no-check]
        [--json-out FILE]

MODEL is an .onnx file or the name of a benchmark model (mlp, cnn, transformer, resnet, vgg) in
--models-dir (default $TERAFAB_CACHE/models/bench, written by scripts/make_bench_models.py);
without any, every *.onnx there runs, the five benchmark models first in that order.

For each model, and each thread count N of --threads:

- onnxruntime: an InferenceSession on the CPUExecutionProvider with intra_op_num_threads=N,
  inter_op_num_threads=1 and ORT_ENABLE_ALL; random inputs (shapes and types from the model's
  inputs, the same fixed seed for every run); --warmup untimed runs, then --iters timed runs.
  A slow model stops early once --min-iters runs are done and the timed runs have taken
  --min-time seconds. Median, min and max latency in ms.
- terafab: `TERAFAB bench MODEL --backend llvm --threads N --iters K --json`, with K the number
  of runs onnxruntime made; the LAST line of its stdout is one JSON object
  {"model", "backend", "threads", "compile_ms", "median_ms", "min_ms", "max_ms", "iters"}.
  A failure (exit status, timeout, unparsable line) is recorded with the first line of stderr
  and the benchmark goes on.

Once per model (unless --no-check), the inputs are saved as .npy files and
`TERAFAB run MODEL --backend llvm --input NAME=FILE.npy... --output-dir DIR` runs on them; each
output DIR/<output name>.npy is compared with onnxruntime's by
np.allclose(rtol=1e-3, atol=1e-4), with the max absolute and relative error.

stdout: the machine (CPU model, cores, onnxruntime version), then a markdown table: model,
threads, onnxruntime and terafab median ms, their ratio terafab/onnxruntime (lower is better),
terafab's compile ms and the check. Progress goes to stderr. --json-out writes every figure as
JSON. The exit status is 0 whenever the benchmark ran, failures included (they are in the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import onnxruntime as ort

BENCH_ORDER = ("mlp", "cnn", "transformer", "resnet", "vgg")
RTOL = 1e-3
ATOL = 1e-4

# onnxruntime's input type strings -> numpy dtypes (the ones random inputs can be made for).
ORT_DTYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclasses.dataclass
class Timing:
    """Latencies of one benchmark (ms), or the error that stopped it."""

    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    iters: int = 0
    compile_ms: float | None = None  # terafab: its compile_ms; onnxruntime: session creation
    error: str | None = None


@dataclasses.dataclass
class Check:
    """terafab's outputs against onnxruntime's on the same inputs."""

    status: str = "skipped"  # "ok", "FAIL", "error" or "skipped"
    max_abs: float | None = None
    max_rel: float | None = None
    detail: str | None = None

    def cell(self) -> str:
        """The table cell: status with the errors, or the failure's first words."""
        if self.status in ("ok", "FAIL") and self.max_abs is not None:
            text = f"{self.status} (abs {self.max_abs:.1e}, rel {self.max_rel:.1e})"
            return text if not self.detail else f"{text}: {self.detail}"
        if self.status == "error":
            return f"error: {short(self.detail or '', 60)}"
        return self.status if not self.detail else f"{self.status}: {short(self.detail, 60)}"


@dataclasses.dataclass
class Result:
    """One row of the table: a model at one thread count."""

    model: str
    path: str
    threads: int
    ort: Timing
    terafab: Timing
    check: Check

    def ratio(self) -> float | None:
        """terafab's median over onnxruntime's (lower is better), when both ran."""
        if self.ort.median_ms and self.terafab.median_ms is not None:
            return self.terafab.median_ms / self.ort.median_ms
        return None


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[bench-ort] {msg}", file=sys.stderr, flush=True)


def short(text: str, limit: int) -> str:
    """One line of text, cut to `limit` characters (table cells must stay one line)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def repo_root() -> pathlib.Path:
    """The repository root: the parent of this script's directory."""
    return pathlib.Path(__file__).resolve().parent.parent


def default_models_dir() -> pathlib.Path:
    """$TERAFAB_CACHE/models/bench, TERAFAB_CACHE defaulting to ~/.cache/terafab."""
    cache = os.environ.get("TERAFAB_CACHE") or str(pathlib.Path.home() / ".cache" / "terafab")
    return pathlib.Path(cache).expanduser() / "models" / "bench"


def parse_threads(text: str) -> list[int]:
    """`1,2` -> [1, 2]; every count at least 1."""
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad thread list {text!r}: {e}") from e
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"bad thread list {text!r}: counts must be >= 1")
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help="model files or benchmark model names"
    )
    p.add_argument(
        "--models-dir", type=pathlib.Path, default=None,
        help=f"where model names and the default models are (default {default_models_dir()})",
    )
    p.add_argument(
        "--threads", type=parse_threads, default=[1, 2], metavar="N,N..",
        help="thread counts (default 1,2)",
    )
    p.add_argument(
        "--iters", type=int, default=20, metavar="K",
        help="timed runs per model and thread count (default 20)",
    )
    p.add_argument(
        "--warmup", type=int, default=3, metavar="W",
        help="untimed onnxruntime runs before them (default 3)",
    )
    p.add_argument(
        "--min-time", type=float, default=10.0, metavar="SECONDS",
        help="a slow model stops before --iters runs once --min-iters runs took this long "
        "(default 10); terafab gets the number of runs onnxruntime made",
    )
    p.add_argument(
        "--min-iters", type=int, default=3, metavar="K",
        help="timed runs made however slow a model is (default 3)",
    )
    p.add_argument(
        "--terafab", type=pathlib.Path, default=repo_root() / "target" / "release" / "terafab",
        metavar="PATH", help="the terafab binary (default target/release/terafab of this repo)",
    )
    p.add_argument(
        "--backend", default="llvm",
        help="terafab's --backend for bench and for the check (default llvm)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS",
        help="time limit of one terafab command (default 600)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="numpy seed of the random inputs (default 0)"
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip the correctness check against onnxruntime"
    )
    p.add_argument(
        "--json-out", type=pathlib.Path, default=None, metavar="FILE",
        help="also write the results as JSON",
    )
    args = p.parse_args(argv)
    if args.iters < 1 or args.min_iters < 1 or args.warmup < 0:
        p.error("--iters and --min-iters must be at least 1, --warmup at least 0")
    return args


def find_models(names: list[str], models_dir: pathlib.Path) -> list[pathlib.Path]:
    """The model files to run: the given files or names, else every *.onnx of `models_dir`
    (the benchmark models first, in BENCH_ORDER, then the others by name)."""
    if names:
        paths = []
        for name in names:
            path = pathlib.Path(name)
            if not path.suffix and not path.exists():
                path = models_dir / f"{name}.onnx"
            paths.append(path.expanduser().resolve())
        return paths
    found = sorted(models_dir.glob("*.onnx"))
    rank = {name: i for i, name in enumerate(BENCH_ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.name))


def machine_info() -> dict[str, Any]:
    """CPU model and core count, Python, numpy and onnxruntime versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
    }


def make_session(model: pathlib.Path, threads: int) -> ort.InferenceSession:
    """An onnxruntime CPU session with `threads` intra-op threads and every graph optimization."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def make_inputs(session: ort.InferenceSession, seed: int) -> dict[str, np.ndarray]:
    """Random inputs for the session's inputs from a fixed seed: standard normal floats, small
    non-negative integers. A symbolic dim is given extent 1 (terafab needs static models)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for info in session.get_inputs():
        dtype = ORT_DTYPES.get(info.type)
        if dtype is None:
            raise ValueError(f"input {info.name}: no random values for type {info.type}")
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in info.shape]
        if np.issubdtype(dtype, np.floating):
            inputs[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            inputs[info.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            inputs[info.name] = rng.integers(0, 10, shape).astype(dtype)
    return inputs


def time_ort(
    session: ort.InferenceSession, inputs: dict[str, np.ndarray], args: argparse.Namespace
) -> Timing:
    """Warm-up runs, then up to --iters timed runs (fewer for a slow model, see --min-time)."""
    for _ in range(args.warmup):
        session.run(None, inputs)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < args.iters:
        t0 = time.perf_counter()
        session.run(None, inputs)
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= args.min_iters and time.perf_counter() - started >= args.min_time:
            break
    return Timing(statistics.median(times), min(times), max(times), len(times))


def first_line(text: str) -> str:
    """The first non-empty line of a command's output, stripped."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def run_terafab(
    cmd: list[str], timeout: float
) -> tuple[subprocess.CompletedProcess[str] | None, str | None]:
    """Run a terafab command; (the finished process, None) if it exited 0, else (process or
    None, a one-line error: the first line of stderr, the exit status, a timeout...)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return None, f"not found: {cmd[0]}"
    except OSError as e:  # not executable, a directory...
        return None, f"{cmd[0]}: cannot run: {e}"
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    if proc.returncode != 0:
        why = first_line(proc.stderr) or first_line(proc.stdout[-2000:])
        code = proc.returncode
        status = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
        return proc, f"{status}: {why}" if why else status
    return proc, None


def bench_terafab(
    model: pathlib.Path, threads: int, iters: int, args: argparse.Namespace
) -> Timing:
    """`terafab bench --json` on one model; its stdout's last line is the result object."""
    cmd = [
        str(args.terafab), "bench", str(model), "--backend", args.backend,
        "--threads", str(threads), "--iters", str(iters), "--json",
    ]
    proc, error = run_terafab(cmd, args.timeout)
    if error is not None or proc is None:
        return Timing(error=error or "no result")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        return Timing(error="no output on stdout (expected a JSON line)")
    try:
        obj = json.loads(lines[-1])
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        timing = Timing(
            median_ms=float(obj["median_ms"]),
            min_ms=float(obj["min_ms"]) if obj.get("min_ms") is not None else None,
            max_ms=float(obj["max_ms"]) if obj.get("max_ms") is not None else None,
            iters=int(obj.get("iters", iters)),
            compile_ms=float(obj["compile_ms"]) if obj.get("compile_ms") is not None else None,
        )
    except (ValueError, KeyError, TypeError) as e:
        return Timing(error=f"unparsable result line ({e}): {short(lines[-1], 80)}")
    if obj.get("threads") not in (None, threads):
        timing.error = f"asked for {threads} threads, terafab reports {obj.get('threads')}"
    return timing


def compare(got: np.ndarray, want: np.ndarray) -> tuple[bool, float, float]:
    """np.allclose(got, want, rtol, atol), the max absolute error, and the max relative error
    |got - want| / max(|want|, atol) (atol keeps near-zero references from dominating)."""
    if got.shape != want.shape:
        raise ValueError(f"shape {list(got.shape)}, expected {list(want.shape)}")
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    diff = np.abs(g - w)
    if diff.size == 0:
        return True, 0.0, 0.0
    if np.isnan(diff).all():
        return False, float("nan"), float("nan")
    max_abs = float(np.nanmax(diff))
    max_rel = float(np.nanmax(diff / np.maximum(np.abs(w), ATOL)))
    ok = bool(np.allclose(g, w, rtol=RTOL, atol=ATOL))
    return ok, max_abs, max_rel


def check_terafab(
    model: pathlib.Path,
    inputs: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    args: argparse.Namespace,
) -> Check:
    """Run the model with `terafab run` on `inputs` (saved as .npy) and compare every output
    with onnxruntime's."""
    with tempfile.TemporaryDirectory(prefix="terafab-bench-ort.") as tmp:
        tmp_dir = pathlib.Path(tmp)
        cmd = [str(args.terafab), "run", str(model), "--backend", args.backend]
        for i, (name, value) in enumerate(inputs.items()):
            path = tmp_dir / f"input{i}.npy"  # input names need not be valid file names
            np.save(path, value)
            cmd += ["--input", f"{name}={path}"]
        out_dir = tmp_dir / "out"
        cmd += ["--output-dir", str(out_dir)]
        _, error = run_terafab(cmd, args.timeout)
        if error is not None:
            return Check("error", detail=error)
        worst_abs, worst_rel, failed = 0.0, 0.0, []
        for name, want in expected.items():
            path = out_dir / f"{name}.npy"
            try:
                got = np.load(path)
                ok, max_abs, max_rel = compare(got, want)
            except (OSError, ValueError) as e:
                return Check("error", detail=f"output {name}: {e}")
            worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
            if not ok or np.isnan(max_abs):
                failed.append(name)
    detail = f"outputs {', '.join(failed)} differ" if failed and len(expected) > 1 else None
    return Check("FAIL" if failed else "ok", worst_abs, worst_rel, detail)


def bench_model(model: pathlib.Path, args: argparse.Namespace) -> list[Result]:
    """Every thread count on one model, onnxruntime then terafab each time, and the check once."""
    name = model.stem
    results: list[Result] = []
    inputs: dict[str, np.ndarray] = {}
    expected: dict[str, np.ndarray] | None = None
    ort_error: str | None = None
    for threads in args.threads:
        log(f"{name}: onnxruntime, {threads} thread(s)")
        try:
            t0 = time.perf_counter()
            session = make_session(model, threads)
            session_ms = (time.perf_counter() - t0) * 1e3
            if not inputs:
                inputs = make_inputs(session, args.seed)
            if expected is None:
                names = [o.name for o in session.get_outputs()]
                expected = dict(zip(names, session.run(names, inputs)))
            ort_timing = time_ort(session, inputs, args)
            ort_timing.compile_ms = session_ms  # session creation: load and graph optimization
            del session
        except Exception as e:  # noqa: BLE001 - any ORT failure is a table entry, not a crash
            ort_error = f"{type(e).__name__}: {first_line(str(e))}"
            ort_timing = Timing(error=ort_error)
        iters = ort_timing.iters or args.iters
        log(f"{name}: terafab bench --backend {args.backend}, {threads} thread(s), {iters} iters")
        tf_timing = bench_terafab(model, threads, iters, args)
        if tf_timing.error:
            log(f"{name}: terafab failed: {tf_timing.error}")
        results.append(Result(name, str(model), threads, ort_timing, tf_timing, Check()))
    if args.no_check:
        check = Check("skipped", detail="--no-check")
    elif expected is None:
        check = Check("skipped", detail=f"no onnxruntime output ({ort_error})")
    else:
        log(f"{name}: terafab run --backend {args.backend} against onnxruntime's outputs")
        check = check_terafab(model, inputs, expected, args)
        log(f"{name}: check {check.cell()}")
    for r in results:
        r.check = check
    return results


def fmt_ms(value: float | None) -> str:
    """A latency cell: 3 decimals below 1 ms, 2 below 100 ms, 1 above; empty when missing."""
    if value is None:
        return ""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def table(results: list[Result]) -> str:
    """The markdown table of the results."""
    header = [
        "model", "threads", "ORT median ms", "terafab median ms",
        "ratio terafab/ORT (lower is better)", "terafab compile ms", "check",
    ]
    rows = []
    for r in results:
        if r.ort.error is not None:
            ort_cell = f"error: {short(r.ort.error, 50)}"
        else:
            ort_cell = fmt_ms(r.ort.median_ms)
        if r.terafab.error is not None:
            tf_cell = f"error: {short(r.terafab.error, 70)}"
        else:
            tf_cell = fmt_ms(r.terafab.median_ms)
        ratio = r.ratio() if r.terafab.error is None else None
        rows.append([
            r.model, str(r.threads), ort_cell, tf_cell,
            f"{ratio:.2f}" if ratio is not None else "",
            fmt_ms(r.terafab.compile_ms) if r.terafab.error is None else "",
            r.check.cell(),
        ])
    right = {1, 2, 3, 4, 5}
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        """One table line, each cell padded to its column's width."""
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    dashes = ["-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    rule = "|" + "|".join(dashes) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def write_json(
    path: pathlib.Path, machine: dict[str, Any], args: argparse.Namespace, results: list[Result]
) -> None:
    """Every figure of the run as one JSON document."""
    doc = {
        "machine": machine,
        "settings": {
            "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
            "min_time_s": args.min_time, "min_iters": args.min_iters,
            "terafab": str(args.terafab), "backend": args.backend, "seed": args.seed,
            "check": {"rtol": RTOL, "atol": ATOL, "enabled": not args.no_check},
        },
        "results": [
            {
                **dataclasses.asdict(r),
                "ratio_terafab_over_ort": r.ratio() if r.terafab.error is None else None,
            }
            for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Benchmark every model at every thread count, print the table, write the JSON."""
    args = parse_args(argv)
    models_dir = (args.models_dir or default_models_dir()).expanduser()
    models = find_models(args.models, models_dir)
    if not models:
        log(f"no models in {models_dir} (write them with scripts/make_bench_models.py)")
        return 2
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        log(f"no such model file: {', '.join(missing)}")
        return 2
    machine = machine_info()
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores; onnxruntime {machine['onnxruntime']}, "
          f"numpy {machine['numpy']}, Python {machine['python']}")
    threads = ",".join(map(str, args.threads))
    print(f"terafab: {args.terafab} (--backend {args.backend}); threads {threads}; "
          f"up to {args.iters} timed runs after {args.warmup} warm-up runs "
          f"(at least {args.min_iters}, fewer once {args.min_time:g} s are spent)")
    print(flush=True)
    results: list[Result] = []
    for model in models:
        results.extend(bench_model(model, args))
    print(table(results), flush=True)
    if args.json_out is not None:
        write_json(args.json_out, machine, args, results)
        log(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
