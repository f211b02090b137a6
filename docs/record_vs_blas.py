"""A stored kernel against BLAS with beta on 1 and 2 threads, at its size and at smaller ones: is the
gap in one core's loop, in the threads, or in the cache blocking?

    python docs/record_vs_blas.py [KERNEL] [M x N x K]     # default: forward 4096x768x768

Takes this machine's record for the size, whatever it runs (a record that runs BLAS keeps the best
kernel config its search found), builds that config with 1 and with 2 threads, and times it against
the compiled BLAS call on as many threads (measure.compare, 7 interleaved rounds, a pause after each)
at the record's size, with K cut to 256 (a 6 x 16 block's B panel then fits a 32 KiB L1), and at
384 x 384 x 256. Prints GF/s, % of that many threads' FMA peak, and the paired
ratio. Run on an idle machine; OPENBLAS_CORETYPE is unset in this process.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import threadpoolctl

from autotune import bench, build, load, measure
from autotune.ops import KERNELS, Problem


def stored_entry(problem):
    """The loader's entry for `problem` on this machine (its own record, or a kin's); exits if there
    is none."""
    entry = load.winners().by_problem.get(problem)
    if entry is None:
        sys.exit(f"no record of {problem} on this machine: search it first")
    return entry


def stored_record(name, size):
    """This machine's record of kernel `name` at "MxNxK", and (M, N, K); exits if there is none."""
    M, N, K = (int(d) for d in size.split("x"))
    return stored_entry(Problem(name, M, N, K)).record, (M, N, K)


def timed_beside_blas(kernel, size, functions, threads, rounds):
    """`functions` ({name: compiled kernel}) and the compiled BLAS call at `size` (M, N, K), all on
    `threads` threads, interleaved: {name: Timing} (BLAS as "blas") and {name: GF/s}."""
    problem = Problem(kernel.name, *size)
    contenders = measure.calls(kernel, kernel.inputs(problem, seed=1),
                               {name: (threads, f) for name, f in functions.items()}, ("blas",))
    with threadpoolctl.threadpool_limits(threads, user_api="blas"):
        timings = measure.compare(contenders, rounds=rounds, seed=0, settle_after=tuple(contenders))
    return timings, {name: t.gflops(problem.flops) for name, t in timings.items()}


def main(name="forward", size="4096x768x768"):
    kernel = KERNELS[name]
    record, (M, N, K) = stored_record(name, size)
    print(f"{name} {size}: record config {record.config.label()} (runs {record.use})")
    for threads in (1, 2):
        function = build.build_kernel(kernel, dataclasses.replace(record.config, threads=threads)).function(kernel)
        for m, n, k in [(M, N, K), (M, N, min(K, 256)), (min(M, 384), min(N, 384), min(K, 256))]:
            t, gf = timed_beside_blas(kernel, (m, n, k), {"kernel": function}, threads, rounds=7)
            peak = bench.fma_peak(threads)
            print(f"  {threads} thread(s) {m}x{n}x{k}: kernel {gf['kernel']:.1f} GF/s ({100 * gf['kernel'] / peak:.0f}%), "
                  f"BLAS {gf['blas']:.1f} ({100 * gf['blas'] / peak:.0f}%); kernel vs BLAS "
                  f"{measure.speedup(t['kernel'], t['blas']).describe()}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
