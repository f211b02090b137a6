"""Benchmark the tuned ops as a user calls them, against everything a user could run instead.

For each shape and op (forward; backward = dinp, then dweight and dbias; step = the forward, then
the backward, as a training loop alternates them), in one process and interleaved (measure.compare,
a pause after every contender: see time_op):

    tuned      the op through `import tuned` (validation and dispatch included)
    kernels    what tuned dispatches to, called directly on 2-D views: tuned minus this is the entry
               point's own cost per call (validation, reshapes, dispatch)
    numpy      numpy as written on the (B,T,C) arrays: np.matmul(inp, W.T, out=out); out += bias ...
    numpy 2-D  numpy on 2-D views, as a careful user writes it (each kernel's `numpy` baseline)
    BLAS beta  BLAS alone, no temporaries, through scipy: sgemm with beta = 1, sgemv for dbias (each
               kernel's `scipy_blas`; the loaders run the same calls from compiled code, `blas`)
    torch      PyTorch's addmm / addmm_ on tensors sharing the arrays' memory, when torch is installed
    sgemm      the bare product (no bias, no accumulation): a yardstick, not the op
    naive      the seed article's loops

"best other" is, of numpy, numpy 2-D, BLAS beta and torch (the ops a user could run instead; sgemm
does not do the op, naive is the article's starting point), the one tuned is least ahead of. Every
ratio is paired: the median over rounds of a contender's time over tuned's in the same round, with
its bootstrap interval (measure.speedup), so that the machine's drift between rounds cancels.
"""
import csv
import json

import numpy as np

from autotune import blas, build, load, machine, measure, ops, render

GPT2_SMALL = ["4,1024,768,768", "4,1024,768,2304", "4,1024,768,3072", "4,1024,3072,768"]
SMALL = ["4,64,48,48", "8,128,192,192"]
DEFAULT_SHAPES = ["64,1024,768,768", *GPT2_SMALL, *SMALL]
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # preset on some machines; they force an OpenBLAS kernel
OTHERS = ("numpy", "numpy 2-D", "BLAS beta", "torch")  # what a user could run instead: "best other"
WIDTH = 0.10  # bench and sweep add rounds to a row until tuned / best other's interval is this narrow
MAX_ROUNDS = 15  # ... or until it has this many
# The ops bench times; "step" is the forward, then the backward, each contender running both. Timed
# alone, an op never meets the threads the other op leaves spinning (autotune/__init__.py).
OP_KERNELS = {"forward": ops.OPS["forward"], "backward": ops.OPS["backward"], "step": ops.OPS["all"]}


def fma_peak(threads):
    """The machine's FMA peak on `threads` threads in GF/s: the best of this measurement and every
    earlier one on this machine kind (kept in the build cache). Other load only ever lowers a
    measurement of pure register FMAs, so the best one is the peak."""
    path = machine.cache_dir() / f"fma-peak-{machine.fingerprint()['id']}.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    best = max(measure_fma_peak(threads), known.get(str(threads), 0.0))
    build.write_atomic(path, json.dumps({**known, str(threads): best}))
    return best


def measure_fma_peak(threads, steps=5_000_000, chains=12):
    """GF/s of pure register FMAs on `threads` threads, measured now."""
    lanes = machine.target().lanes
    source = render.render_file("fma_peak.py.jinja", chains=chains, lanes=lanes)
    fn = build.build(source, render.COMPILE_FLAGS).module.fma_chains
    x, out = np.full(lanes, 0.999, np.float32), np.zeros(threads, np.float32)
    with measure.thread_count(threads):
        fn(1000, x, out)
        best = min(measure.seconds(lambda: fn(steps, x, out)) for _ in range(5))
    return 2 * chains * lanes * steps * threads / best / 1e9


def op_arrays(shape, seed=0, bias=True):
    """The arrays of both ops at one shape; without bias, `bias` and `dbias` are empty."""
    rng = np.random.default_rng(seed)
    f = lambda *dims: rng.standard_normal(dims, dtype=np.float32)
    B, T, C, OC = shape.B, shape.T, shape.C, shape.OC
    return dict(inp=f(B, T, C), weight=f(OC, C), bias=f(OC if bias else 0), out=f(B, T, OC), dout=f(B, T, OC),
                dinp=f(B, T, C), dweight=f(OC, C), dbias=f(OC if bias else 0))


def kernel_arguments(kernel, a):
    """The kernel's arguments (2-D views) from an op's (B,T,...) arrays."""
    M = a["inp"].shape[0] * a["inp"].shape[1]
    views = {"out": a["out"].reshape(M, -1), "inp": a["inp"].reshape(M, -1), "weight": a["weight"],
             "bias": a["bias"], "dinp": a["dinp"].reshape(M, -1), "dout": a["dout"].reshape(M, -1),
             "dweight": a["dweight"], "dbias": a["dbias"]}
    return [views[name] for name in kernel.arguments]


def contenders(op, a, torch=None):
    """{name: fn} doing `op` on arrays `a` (see the module docstring); torch if given (the module)."""
    if op == "step":
        forward, backward = contenders("forward", a, torch), contenders("backward", a, torch)
        return {name: (lambda f=forward[name], b=backward[name]: (f(), b())) for name in forward}
    kernels = [ops.KERNELS[name] for name in ops.OPS[op]]
    args = [kernel_arguments(k, a) for k in kernels]
    no_bias = a["bias"].shape[0] == 0
    shape = ops.Shape(*a["inp"].shape, a["weight"].shape[0])
    if op == "forward":
        dispatched, dispatched_args = load.winners().function(kernels[0].problem(shape))[0], args[0]
    else:  # the whole backward, as the entry point dispatches it (dinp, dweight, dbias, dout, inp, weight)
        dispatched = load.winners().backward_function(shape.B * shape.T, shape.C, shape.OC)[0]
        (dinp, dout, weight), (dweight, dbias, _, inp) = args
        dispatched_args = (dinp, dweight, dbias, dout, inp, weight)

    def each(baseline):
        return lambda: [k.baseline(baseline)(*x) for k, x in zip(kernels, args)]

    if op == "forward":
        def tuned():
            load.matmul_forward(a["out"], a["inp"], a["weight"], None if no_bias else a["bias"])

        def numpy():
            np.matmul(a["inp"], a["weight"].T, out=a["out"])
            if not no_bias:
                a["out"] += a["bias"]
    else:
        def tuned():
            load.matmul_backward(a["dinp"], a["dweight"], None if no_bias else a["dbias"], a["dout"], a["inp"],
                                 a["weight"])

        def numpy():
            a["dinp"] += a["dout"] @ a["weight"]
            a["dweight"] += args[1][2].T @ args[1][3]
            if not no_bias:
                a["dbias"] += a["dout"].sum(axis=(0, 1))

    timed = {"naive": each("naive"), "tuned": tuned, "kernels": lambda: dispatched(*dispatched_args),
             "numpy": numpy, "numpy 2-D": each("numpy"), "BLAS beta": each("scipy_blas"), "sgemm": each("sgemm")}
    if torch is not None:
        timed["torch"] = torch_op(torch, op, args)
    return timed


def torch_op(torch, op, args):
    """The op in PyTorch on tensors that share the arrays' memory (made once, as a torch user holds them)."""
    t = [[torch.from_numpy(x) for x in kernel_args] for kernel_args in args]
    if op == "forward":
        out, inp, weight, bias = t[0]
        if bias.shape[0]:
            return lambda: torch.addmm(bias, inp, weight.t(), out=out)
        return lambda: torch.mm(inp, weight.t(), out=out)
    (dinp, dout, weight), (dweight, dbias, dout2, inp) = t

    def backward():
        dinp.addmm_(dout, weight)
        dweight.addmm_(dout2.t(), inp)
        if dbias.shape[0]:
            dbias.add_(dout2.sum(0))
    return backward


def torch_info(torch):
    if torch is None:
        return "not installed"
    settings = torch.__config__.show()
    blas = next((part.split("=", 1)[1] for part in settings.replace(",", "\n").split() if part.startswith("BLAS_INFO=")),
                "unknown")
    return f"{torch.__version__}, BLAS {blas}, {torch.backends.cpu.get_cpu_capability()}"


def choices(op, shape):
    """What `import tuned` runs for each kernel of this op at this shape (load.Choice)."""
    return [load.winners().choice(ops.KERNELS[name].problem(shape)) for name in OP_KERNELS[op]]


def origin(op_choices):
    """"tuned", "kin", "near" or "far": the least measured of an op's choices (Choice.kind)."""
    kinds = {choice.kind for choice in op_choices}
    return next(kind for kind in ("far", "near", "kin", "tuned") if kind in kinds)


def dispatch(op_choices, shape):
    """How `import tuned` runs an op, per kernel: a config or a baseline, and whether it was tuned at
    this size (here or on a kin machine), taken from a near tuned size, or BLAS where nothing near
    was tuned; and whether a backward on BLAS runs its halves side by side (autotune.blas.backward)."""
    names = []
    for choice in op_choices:
        if choice.config is not None:
            names.append(choice.kind)
        elif choice.beside:  # a kernel giving way to the BLAS formulation the other half runs
            names.append(f"{choice.baseline} ({choice.kind}, beside)")
        else:
            names.append(choice.baseline if choice.kind == "tuned" else f"{choice.baseline} ({choice.kind})")
    halves = op_choices[-2:]  # the backward's, where the op has one
    side_by_side = (len(halves) == 2 and all(choice.baseline == "blas" for choice in halves)
                    and blas.runs_side_by_side(shape.B * shape.T, shape.C, shape.OC))
    return "+".join(names) + (" side by side" if side_by_side else "")


def time_op(op, shape, rounds, torch=None, bias=True, skip_naive=False, max_rounds=None, width=WIDTH):
    """{contender: Timing} of one op at one shape, interleaved: `rounds` rounds, then more, up to
    `max_rounds`, until tuned / best other's interval is `width` narrow (precise)."""
    a = op_arrays(shape, bias=bias)
    timed = contenders(op, a, torch)
    if skip_naive:
        del timed["naive"]
    # OpenBLAS's threads spin after a call and slow what runs next; so may torch's and numba's OpenMP
    # threads, and tuned runs BLAS at some sizes: a pause after every contender, not only BLAS ones.
    return measure.compare(timed, rounds=rounds, settle_after=tuple(timed), max_rounds=max_rounds or rounds,
                           until=precise(width), first_rounds_only=("naive",))


def precise(width):
    """A test of timings so far: is tuned / best other's interval narrower than `width` (high / low - 1)?

    Calls of a fraction of a millisecond move widely between bursts here: 3-5 rounds read intervals
    like 0.60-2.04 at 64,64,192,192 (Zen 4, 2026-12-03), readings that neither show a loss nor rule
    it out. A row gets rounds until its interval says something, whichever way it points; large
    shapes are precise after the first rounds. The naive loop is left out of the added rounds: it
    takes seconds a call at large shapes, and its ratio (10-100x) needs no precision."""
    def enough(timings):
        paired = versus(timings)
        ratio = paired[best_other(paired)]
        return ratio.high / ratio.low - 1 <= width
    return enough


ENTRY_RESOLVED_S = 1e-3  # above it, the difference of two medians is the calls' noise, not the entry point


def _entry_cost_us(timings):
    """Microseconds per call the entry point adds to the kernels it runs, where a call is short
    enough to resolve it; NaN elsewhere."""
    if timings["tuned"].median > ENTRY_RESOLVED_S:
        return float("nan")
    return round(1e6 * (timings["tuned"].median - timings["kernels"].median), 1)


def versus(timings):
    """{contender: measure.Speedup of tuned over it}, paired by round (each round's time of the
    contender over tuned's in the same round, so drift between rounds cancels)."""
    return {name: measure.speedup(timings["tuned"], t) for name, t in timings.items() if name != "tuned"}


def best_other(paired):
    """The contender a user could run instead that tuned is least ahead of, by paired median.

    Not the fastest median time: when several contenders run the same sgemm (numpy 2-D, BLAS beta,
    the loader's BLAS), the fastest of their noisy medians is faster than what any of them runs, and
    a ratio to it reads below 1 for the very same call (rows that ran BLAS read 0.90-0.98 that way)."""
    return min((name for name in OTHERS if name in paired), key=lambda name: paired[name].median)


def row(op, shape, timings, peak, flops, threads):
    """One table row: GF/s of every contender (median times), the best other and tuned's paired
    ratios to it and to the yardsticks, and % of peak."""
    gf = {name: t.gflops(flops) for name, t in timings.items()}
    paired = versus(timings)
    best = best_other(paired)
    op_choices = choices(op, shape)
    return {"shape": str(shape), "op": op, "dispatch": dispatch(op_choices, shape), "origin": origin(op_choices),
            "threads": threads, "flops": flops, "rounds": timings["tuned"].rounds,
            **{f"{name} GF/s": round(v, 1) for name, v in gf.items()},
            **{f"{name} s": t.median for name, t in timings.items()},
            "best other": best, "tuned / best other": round(paired[best].median, 3),
            "tuned / best other low": round(paired[best].low, 3), "tuned / best other high": round(paired[best].high, 3),
            **{f"tuned / {name}": round(paired[name].median, 3) for name in ("numpy", "BLAS beta", "sgemm")},
            "tuned / naive": round(paired["naive"].median, 2) if "naive" in paired else float("nan"),
            "tuned % peak": round(100 * gf["tuned"] / peak, 1), "sgemm % peak": round(100 * gf["sgemm"] / peak, 1),
            "entry point us": _entry_cost_us(timings),
            "peak GF/s": round(peak, 1)}


def run(shapes, op_names=("forward", "backward"), rounds=5, csv_path=None, progress=print, naive_max_gflop=None,
        max_rounds=None):
    """Rows per shape and op, each of `rounds` rounds and up to `max_rounds` (time_op); the naive
    loop is skipped past `naive_max_gflop`."""
    threads = machine.max_threads()
    peak = fma_peak(threads)
    torch = ops.torch_or_none()  # on numba's thread count, as every other contender
    rows = []
    for shape in shapes:
        for op in op_names:
            flops = sum(ops.KERNELS[k].problem(shape).flops for k in OP_KERNELS[op])
            skip = naive_max_gflop is not None and flops > naive_max_gflop * 1e9
            with measure.thread_count(threads):
                timings = time_op(op, shape, rounds, torch, skip_naive=skip, max_rounds=max_rounds)
            rows.append(row(op, shape, timings, peak, flops, threads))
            progress(rows[-1])
    if csv_path:
        write_csv(rows, csv_path)
    return rows, peak, torch


def model_step(model, batch, seq, rounds, progress=print, max_rounds=None):
    """Every matmul of one GPT-2 training step, forward and backward, timed per matmul kind and summed
    (times the number of layers) for every contender; rows per matmul and op, then the step's total."""
    threads = machine.max_threads()
    peak = fma_peak(threads)
    torch = ops.torch_or_none()  # on numba's thread count, as every other contender
    rows, total = [], {}
    for matmul in ops.model_matmuls(model, batch, seq):
        for op in ("forward", "backward"):
            flops = sum(ops.KERNELS[k].problem(matmul.shape).flops for k in ops.OPS[op])
            with measure.thread_count(threads):
                timings = time_op(op, matmul.shape, rounds, torch, bias=matmul.bias, skip_naive=True,
                                  max_rounds=max_rounds)
            rows.append({"matmul": f"{matmul.name} x{matmul.count}", **row(op, matmul.shape, timings, peak, flops,
                                                                           threads)})
            progress(rows[-1])
            for name, timing in timings.items():
                total[name] = total.get(name, 0.0) + matmul.count * timing.median
    step_flops = sum(r["flops"] * int(r["matmul"].rsplit("x", 1)[1]) for r in rows)
    summary = {name: {"seconds": s, "gflops": step_flops / s / 1e9} for name, s in total.items()}
    return rows, summary, peak, torch


def write_csv(rows, path):
    fields = list(dict.fromkeys(key for r in rows for key in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def njit_calls(shapes, rounds=5, calls=200, progress=print):
    """Each op called `calls` times in a loop inside @njit code, through tuned.njit's entry points and
    through numba's np.dot (scipy's BLAS) into preallocated arrays with the bias add or accumulation a
    user writes; {(shape, op): {"tuned": Timing, "np.dot": Timing}} per call, interleaved."""
    loops = _njit_loops()  # compiled on first use: importing tuned.njit builds its dispatch
    threads = machine.max_threads()
    results = {}
    for shape in shapes:
        a = op_arrays(shape)
        for op in ("forward", "backward"):
            timed = {name: (lambda fn=fn, op=op, a=a: fn(calls, *_loop_arguments(op, a))) for name, fn in loops[op].items()}
            with measure.thread_count(threads):
                timings = measure.compare(timed, rounds=rounds, settle_after=tuple(timed))
            results[(str(shape), op)] = {name: measure.Timing.of([s / calls for s in t.samples])
                                         for name, t in timings.items()}
            progress({"shape": str(shape), "op": op})
    return results


def _loop_arguments(op, a):
    if op == "forward":
        return a["out"], a["inp"], a["weight"], a["bias"]
    return a["dinp"], a["dweight"], a["dbias"], a["dout"], a["inp"], a["weight"]


def _njit_loops():
    from numba import njit

    from tuned.njit import matmul_backward, matmul_forward

    @njit
    def tuned_forward(calls, out, inp, weight, bias):
        for _ in range(calls):
            matmul_forward(out, inp, weight, bias)

    @njit
    def dot_forward(calls, out, inp, weight, bias):
        B, T, C = inp.shape
        out2, inp2 = out.reshape(B * T, -1), inp.reshape(B * T, C)
        for _ in range(calls):
            np.dot(inp2, weight.T, out2)
            out2 += bias

    @njit
    def tuned_backward(calls, dinp, dweight, dbias, dout, inp, weight):
        for _ in range(calls):
            matmul_backward(dinp, dweight, dbias, dout, inp, weight)

    @njit
    def dot_backward(calls, dinp, dweight, dbias, dout, inp, weight):
        B, T, OC = dout.shape
        dout2, inp2, dinp2 = dout.reshape(B * T, OC), inp.reshape(B * T, -1), dinp.reshape(B * T, -1)
        for _ in range(calls):
            dinp2 += np.dot(dout2, weight)
            dweight += np.dot(dout2.T, inp2)
            dbias += dout2.sum(axis=0)

    return {"forward": {"tuned": tuned_forward, "np.dot": dot_forward},
            "backward": {"tuned": tuned_backward, "np.dot": dot_backward}}
