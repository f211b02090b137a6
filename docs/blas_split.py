"""How the compiled BLAS calls split work between numba's workers: columns of N against rows of M.

    python docs/blas_split.py [SHAPE ...]   # default: the B=4, T=64 GPT-2 sizes and one at T=1024

autotune.blas runs each sgemm on numba's threads, each worker a share of C. Split by rows, every
worker's sgemm packs all of B; split by columns, all of A. blas.forward and blas.backward_input
split columns where N > M (blas.splits_columns). Per shape this times, interleaved (11 rounds in
random order, 2 threads, a pause after each), both ops as shipped, the same calls split by rows
(written out here), the same sgemm (numpy's OpenBLAS) called once on OpenBLAS's own threads, and
scipy's sgemm with beta (scipy's OpenBLAS) on its own threads, and prints each as a paired speedup
over the rows split. Run on an idle machine.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba
from numba import njit, prange

from autotune import blas, measure
from autotune.ops import KERNELS, Shape

THREADS = 2
DEFAULT_SHAPES = ["4,64,768,768", "4,64,768,2304", "4,64,768,3072", "4,64,3072,768", "4,1024,768,3072"]


@njit(parallel=True)
def forward_by_rows(out, inp, weight, bias):
    workers, own = blas._workers(2.0 * out.shape[0] * out.shape[1] * inp.shape[1])
    blas._set_blas_threads(1)
    for worker in prange(workers):
        begin, end = blas._share(out.shape[0], worker, workers)
        if end > begin:
            blas._forward_rows(out, inp, weight, bias, begin, end)
    blas._set_blas_threads(own)


@njit(parallel=True)
def input_by_rows(dinp, dout, weight):
    workers, own = blas._workers(2.0 * dinp.shape[0] * dinp.shape[1] * dout.shape[1])
    blas._set_blas_threads(1)
    for worker in prange(workers):
        begin, end = blas._share(dinp.shape[0], worker, workers)
        if end > begin:
            blas._input_rows(dinp, dout, weight, begin, end)
    blas._set_blas_threads(own)


@njit
def forward_one_call(out, inp, weight, bias):
    blas._forward_rows(out, inp, weight, bias, 0, out.shape[0])


@njit
def input_one_call(dinp, dout, weight):
    blas._input_rows(dinp, dout, weight, 0, dinp.shape[0])


BY_ROWS = {"forward": forward_by_rows, "backward_input": input_by_rows}
ONE_CALL = {"forward": forward_one_call, "backward_input": input_one_call}  # numpy's sgemm on OpenBLAS's threads


def compare(shape):
    lines = []
    for name, by_rows in BY_ROWS.items():
        kernel = KERNELS[name]
        problem = kernel.problem(Shape.parse(shape))
        arrays = kernel.inputs(problem, seed=1)
        split = "columns" if blas.splits_columns(problem.M, problem.N) else "rows"
        contenders = {"rows": lambda: kernel.call(by_rows, arrays),
                      f"shipped ({split})": lambda: kernel.call(kernel.blas, arrays),
                      "one call, OpenBLAS's threads": lambda: kernel.call(ONE_CALL[name], arrays),
                      "scipy, OpenBLAS's threads": lambda: kernel.call(kernel.scipy_blas, arrays)}
        with measure.thread_count(THREADS):
            t = measure.compare(contenders, rounds=11, seed=0, settle_after=tuple(contenders))
        lines.append(f"{shape} {name} {problem.M}x{problem.N}x{problem.K}: " + "; ".join(
            f"{c} {measure.speedup(t[c], t['rows']).describe()} ({t[c].gflops(problem.flops):.0f} GF/s)"
            for c in contenders if c != "rows") + f"; against the rows split ({t['rows'].gflops(problem.flops):.0f} GF/s)")
    return "\n".join(lines)


if __name__ == "__main__":
    numba.set_num_threads(THREADS)
    for text in sys.argv[1:] or DEFAULT_SHAPES:
        print(compare(text))
