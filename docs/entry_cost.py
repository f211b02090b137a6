"""Where the Python entry point's time goes at a small shape (default 4,64,48,48, forward).

    python docs/entry_cost.py [B,T,C,OC]

Times, interleaved over 7 rounds (best of 3 x 200 calls each), medians: the whole entry point,
the dispatched kernel on the same 2-D views and on fresh reshapes, `_run` (dispatch lookup and
thread count), `_run` with a no-op kernel in the dispatch table (its own cost), the compiled check
of the arguments (types, shapes, overlap), and numba's thread count read from Python
(numba.get_num_threads) and from compiled code (load._numba_threads, what `_run` reads). Run on an
idle machine.
"""
import os
import sys
import timeit

import numba
import numpy as np

from autotune import load
from autotune.ops import Problem, Shape


@numba.njit
def no_op(out, inp, weight, bias):
    pass


def pieces(shape):
    B, T, C, OC = shape.B, shape.T, shape.C, shape.OC
    rng = np.random.default_rng(0)
    inp, weight = rng.standard_normal((B, T, C), dtype=np.float32), rng.standard_normal((OC, C), dtype=np.float32)
    bias, out = rng.standard_normal(OC, dtype=np.float32), np.empty((B, T, OC), np.float32)
    M = B * T
    fn, _ = load.winners().function(Problem("forward", M, OC, C))
    out2, inp2 = out.reshape(M, OC), inp.reshape(M, C)
    load._dispatch[(load._environ.get(load._TUNED_DIR_KEY), "no-op", M, OC, C)] = (no_op, numba.get_num_threads())
    return {
        "entry point": lambda: load.matmul_forward(out, inp, weight, bias),
        "kernel, same views": lambda: fn(out2, inp2, weight, bias),
        "kernel, fresh reshapes": lambda: fn(out.reshape(M, OC), inp.reshape(M, C), weight, bias),
        "_run (dispatch + kernel)": lambda: load._run("forward", (M, OC, C), out2, inp2, weight, bias),
        "_run, no-op kernel": lambda: load._run("no-op", (M, OC, C), out2, inp2, weight, bias),
        "check (types, shapes, overlap)": lambda: load._forward_dims(out, inp, weight, bias, True),
        "numba.get_num_threads": numba.get_num_threads,
        "load._numba_threads": load._numba_threads,
    }


def main():
    os.environ.pop("OPENBLAS_CORETYPE", None)
    shape = Shape.parse(sys.argv[1] if len(sys.argv) > 1 else "4,64,48,48")
    timed = pieces(shape)
    for fn in timed.values():
        fn()
    samples = {name: [] for name in timed}
    for _ in range(7):
        for name, fn in timed.items():
            samples[name].append(min(timeit.repeat(fn, number=200, repeat=3)) / 200 * 1e6)
    print(f"forward at {shape}, {numba.get_num_threads()} numba threads; microseconds per call, medians of 7 rounds")
    for name, values in samples.items():
        print(f"  {name:26s} {np.median(values):7.1f}")


if __name__ == "__main__":
    main()
