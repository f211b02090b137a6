"""Two OpenBLAS libraries in one process: numpy's, and scipy's (what numba's np.dot calls).

    python docs/two_blas.py [B,T,C,OC ...] [--scipy]     # default 4,64,48,48 8,128,192,192 4,1024,768,768

Back-to-back forward calls with no pause between them, as a training loop makes them: the compiled
BLAS call twice ("blas,blas"), numpy on 2-D arrays twice, and one of each. Each library's threads
spin for a while after a call, so a call into the other library then fights them for the cores.
autotune.blas calls numpy's sgemm, so its "blas,numpy" pair costs what its parts cost; with
--scipy it calls scipy's (as it did before), which shows the fight. measure.compare, 7 interleaved
rounds in random order (each a burst of pairs), medians per pair; run on an idle machine (OPENBLAS_CORETYPE is unset here).
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import llvmlite.binding as llvm
from numba.extending import get_cython_function_address

from autotune import blas, machine, measure
from autotune.ops import KERNELS, Shape


def main(shapes):
    kernel = KERNELS["forward"]
    for text in shapes:
        problem = kernel.problem(Shape.parse(text))
        first, second = ([arrays[n] for n in kernel.arguments] for arrays in
                         (kernel.inputs(problem, seed=1), kernel.inputs(problem, seed=2)))

        def pair(f, g, first=first, second=second):
            def run():
                f(*first)
                g(*second)
            return run

        contenders = {"blas,blas": pair(kernel.blas, kernel.blas), "numpy,numpy": pair(kernel.numpy, kernel.numpy),
                      "blas,numpy": pair(kernel.blas, kernel.numpy)}
        with measure.thread_count(machine.max_threads()):
            t = measure.compare(contenders, rounds=7, seed=0)
        print(f"{text}: ms a pair " + ", ".join(f"{k} {t[k].median * 1e3:.3f}" for k in contenders))
        print("  blas,blas x faster than blas,numpy:", measure.speedup(t["blas,blas"], t["blas,numpy"]).describe())
        print("  numpy,numpy x faster than blas,numpy:", measure.speedup(t["numpy,numpy"], t["blas,numpy"]).describe(),
              flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    source = blas.SGEMM_SOURCE
    if "--scipy" in args:
        args.remove("--scipy")
        source = "scipy.linalg.cython_blas sgemm"
        llvm.add_symbol(blas.SGEMM_SYMBOL, get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
    print(f"compiled BLAS calls: {source}")
    main(args or ["4,64,48,48", "8,128,192,192", "4,1024,768,768"])
