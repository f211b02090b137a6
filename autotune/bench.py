"""Benchmark the tuned ops as a user calls them, against BLAS and the seed article's loop.

For each shape and op, in one process and interleaved (measure.compare): the naive llm.c loop,
the tuned op through `import tuned` (validation and dispatch included), numpy as a user writes
it (bias add / accumulation included), and bare sgemm (np.matmul into a preallocated array).
"""
import csv
import json
import os

import numpy as np

from autotune import build, machine, measure, ops, render
from autotune import load

GPT2_SMALL = ["4,1024,768,768", "4,1024,768,2304", "4,1024,768,3072", "4,1024,3072,768"]
SMALL = ["4,64,48,48", "8,128,192,192"]
DEFAULT_SHAPES = ["64,1024,768,768", *GPT2_SMALL, *SMALL]
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # preset here; they force OpenBLAS's AVX2 kernel


def fma_peak(threads):
    """The machine's FMA peak on `threads` threads in GF/s: the best of this measurement and every
    earlier one on this machine kind (kept in the build cache). Other load only ever lowers a
    measurement of pure register FMAs, so the best one is the peak."""
    path = build.cache_dir() / f"fma-peak-{machine.fingerprint()['id']}.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    best = max(measure_fma_peak(threads), known.get(str(threads), 0.0))
    build.write_atomic(path, json.dumps({**known, str(threads): best}))
    return best


def measure_fma_peak(threads, steps=5_000_000, chains=12):
    """GF/s of pure register FMAs on `threads` threads, measured now."""
    lanes = machine.vector_floats()
    source = render.render_file("fma_peak.py.jinja", chains=chains, lanes=lanes)
    fn = build.build(source, render.COMPILE_FLAGS).module.fma_chains
    x, out = np.full(lanes, 0.999, np.float32), np.zeros(threads, np.float32)
    with measure.thread_count(threads):
        fn(1000, x, out)
        best = min(measure.seconds(lambda: fn(steps, x, out)) for _ in range(5))
    return 2 * chains * lanes * steps * threads / best / 1e9


def op_arrays(shape, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *dims: rng.standard_normal(dims, dtype=np.float32)
    B, T, C, OC = shape.B, shape.T, shape.C, shape.OC
    return dict(inp=f(B, T, C), weight=f(OC, C), bias=f(OC), out=f(B, T, OC), dout=f(B, T, OC),
                dinp=f(B, T, C), dweight=f(OC, C), dbias=f(OC), scratch_out=f(B * T, OC),
                scratch_dinp=f(B * T, C), scratch_dweight=f(OC, C))


def contenders(op, a):
    """{name: fn} for one op on arrays `a`."""
    M = a["inp"].shape[0] * a["inp"].shape[1]
    inp2, dout2 = a["inp"].reshape(M, -1), a["dout"].reshape(M, -1)
    if op == "forward":
        def numpy_op():
            np.matmul(a["inp"], a["weight"].T, out=a["out"])
            a["out"] += a["bias"]
        return {
            "naive": lambda: ops.naive_forward(a["out"].reshape(M, -1), inp2, a["weight"], a["bias"]),
            "tuned": lambda: load.matmul_forward(a["out"], a["inp"], a["weight"], a["bias"]),
            "numpy": numpy_op,
            "sgemm": lambda: np.matmul(inp2, a["weight"].T, out=a["scratch_out"]),
        }

    def naive_op():
        ops.naive_backward_input(a["dinp"].reshape(M, -1), dout2, a["weight"])
        ops.naive_backward_weight(a["dweight"], a["dbias"], dout2, inp2)

    def numpy_op():
        a["dinp"] += a["dout"] @ a["weight"]
        a["dweight"] += dout2.T @ inp2
        a["dbias"] += a["dout"].sum(axis=(0, 1))

    def sgemm_op():
        np.matmul(dout2, a["weight"], out=a["scratch_dinp"])
        np.matmul(dout2.T, inp2, out=a["scratch_dweight"])

    return {
        "naive": naive_op,
        "tuned": lambda: load.matmul_backward(a["dinp"], a["dweight"], a["dbias"], a["dout"], a["inp"], a["weight"]),
        "numpy": numpy_op,
        "sgemm": sgemm_op,
    }


def dispatch(op, shape):
    """How `import tuned` runs this op at this shape: per kernel, tuned config, default or BLAS."""
    names = []
    for kernel_name in ops.OPS[op]:
        entry = load.winners().by_problem.get(ops.KERNELS[kernel_name].problem(shape))
        names.append("default" if entry is None else entry.record.get("use", "kernel"))
    return "+".join(names)


def run(shapes, op_names=("forward", "backward"), rounds=5, csv_path=None, progress=print, naive_max_gflop=None):
    """Rows of GF/s and ratios per shape and op; the naive loop is skipped (NaN) past `naive_max_gflop`."""
    threads = machine.max_threads()
    peak = fma_peak(threads)
    blas = measure.blas_info()
    rows = []
    for text in shapes:
        shape = ops.Shape.parse(text)
        a = op_arrays(shape)
        for op in op_names:
            flops = sum(ops.KERNELS[k].problem(shape).flops for k in ops.OPS[op])
            timed = contenders(op, a)
            if naive_max_gflop is not None and flops > naive_max_gflop * 1e9:
                del timed["naive"]  # minutes per call at the large end of the sweep
            with measure.thread_count(threads):
                t = measure.compare(timed, rounds=rounds, blas_names=("numpy", "sgemm"))
            gf = {name: timing.gflops(flops) for name, timing in t.items()}
            gf.setdefault("naive", float("nan"))
            seconds = {f"{name}_s": t[name].median if name in t else float("nan") for name in gf}
            row = {"shape": str(shape), "op": op, "dispatch": dispatch(op, shape), "threads": threads, "flops": flops,
                   **{f"{name}_gflops": round(v, 1) for name, v in gf.items()}, **seconds,
                   "tuned_vs_numpy": round(gf["tuned"] / gf["numpy"], 3),
                   "tuned_vs_sgemm": round(gf["tuned"] / gf["sgemm"], 3),
                   "tuned_vs_naive": round(gf["tuned"] / gf["naive"], 2),
                   "tuned_pct_peak": round(100 * gf["tuned"] / peak, 1),
                   "sgemm_pct_peak": round(100 * gf["sgemm"] / peak, 1),
                   "peak_gflops": round(peak, 1), "blas_kernel": blas["architecture"],
                   "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE") or "unset"}
            rows.append(row)
            progress(row)
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows, peak, blas
