"""Compile time and run time of terafab's Cranelift backend against its LLVM backend, and
tiered compilation (`--backend auto`), side by side. Plain python3 (no packages); normally run
by scripts/bench-compile.sh, which builds terafab and writes the models first:

    python3 scripts/bench_compile.py --terafab PATH [MODEL...] [--models-dir DIR]
        [--threads 1,2] [--iters 10] [--warmup 1] [--no-auto] [--json-out FILE]

For each model and thread count N: `TERAFAB bench MODEL --backend B --threads N --iters K
--warmup W --json` for B = cranelift and llvm (the last stdout line is one JSON object:
compile_ms = passes + fusion + backend, backend_ms = kernel IR to loaded machine code, and the
median run ms), then `--backend auto` (time to the first result, when LLVM's code was ready,
runs and median per tier). Tables (markdown) on stdout:

- compile: the backend's compile time for Cranelift and LLVM and their ratio LLVM/Cranelift
  (issue 9's target: >= 5), with passes + fusion (shared by both) apart;
- run: median run ms of each, ratio Cranelift/LLVM (target: <= 2.5);
- auto: first result and LLVM-ready times, runs and medians per tier.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

BENCH_ORDER = ("mlp", "cnn", "transformer", "resnet", "vgg")


def log(msg: str) -> None:
    print(f"[bench-compile] {msg}", file=sys.stderr, flush=True)


def bench(terafab: str, model: pathlib.Path, backend: str, threads: int, iters: int,
          warmup: int) -> dict:
    cmd = [terafab, "bench", str(model), "--backend", backend, "--threads", str(threads),
           "--iters", str(iters), "--warmup", str(warmup), "--json"]
    log(" ".join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    if p.returncode != 0:
        first = (p.stderr.strip().splitlines() or ["exit status %d" % p.returncode])[0]
        return {"error": first}
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as e:
        return {"error": f"unparsable output: {e}"}


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or x != x:
        return ""
    return f"{x:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", metavar="MODEL")
    ap.add_argument("--models-dir", type=pathlib.Path,
                    default=pathlib.Path(os.environ.get("TERAFAB_CACHE",
                                                        pathlib.Path.home() / ".cache/terafab"))
                    / "models/bench")
    ap.add_argument("--terafab", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-auto", action="store_true")
    ap.add_argument("--json-out", type=pathlib.Path)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t]
    names = args.models or list(BENCH_ORDER)
    models = [pathlib.Path(m) if m.endswith(".onnx") else args.models_dir / f"{m}.onnx"
              for m in names]

    results = []
    for model in models:
        for n in threads:
            row = {"model": model.stem, "threads": n}
            for backend in ("cranelift", "llvm"):
                row[backend] = bench(args.terafab, model, backend, n, args.iters, args.warmup)
            if not args.no_auto:
                row["auto"] = bench(args.terafab, model, "auto", n, args.iters, args.warmup)
            results.append(row)

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; terafab bench, "
          f"{args.iters} timed runs after {args.warmup} warm-up; times in ms\n")
    print("| model | threads | kernels | passes+fusion | Cranelift compile | LLVM compile "
          "| compile LLVM/Cranelift | Cranelift run | LLVM run | run Cranelift/LLVM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        c, l = r["cranelift"], r["llvm"]
        err = c.get("error") or l.get("error")
        if err:
            print(f"| {r['model']} | {r['threads']} | | | | | | | | error: {err} |")
            continue
        lower = c["compile_ms"] - c["backend_ms"]
        cr = ratio(l["backend_ms"], c["backend_ms"])
        rr = ratio(c["median_ms"], l["median_ms"])
        print(f"| {r['model']} | {r['threads']} | {c['kernels']} | {fmt(lower)} "
              f"| {fmt(c['backend_ms'])} | {fmt(l['backend_ms'])} | {fmt(cr, 1)}x "
              f"| {fmt(c['median_ms'], 3)} | {fmt(l['median_ms'], 3)} | {fmt(rr, 2)}x |")
    if not args.no_auto:
        print("\n`--backend auto`: from the start of compilation (after passes and fusion)\n")
        print("| model | threads | Cranelift ready | first result | LLVM ready | Cranelift runs "
              "| Cranelift median | LLVM runs | LLVM median |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            a = r["auto"]
            if a.get("error"):
                print(f"| {r['model']} | {r['threads']} | | | | | | | error: {a['error']} |")
                continue
            llvm_ready = "failed" if a.get("llvm_error") else fmt(a["llvm_ready_ms"])
            print(f"| {r['model']} | {r['threads']} | {fmt(a['cranelift_ready_ms'])} "
                  f"| {fmt(a['first_result_ms'])} | {llvm_ready} | {a['cranelift_runs']} "
                  f"| {fmt(a['cranelift_median_ms'], 3)} | {a['llvm_runs']} "
                  f"| {fmt(a['llvm_median_ms'], 3)} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
