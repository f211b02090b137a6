"""The weight gradient's dbias sums, both ways: added into dbias at every row of dout, and held NR at
a time in a stack array down each K block (the template choice `sums_in_registers`), each with and
without dbias, beside BLAS with beta (the compiled call the loader runs where BLAS won).

    python docs/sums_in_registers.py [MxNxK] [THREADS]     # default 48x48x16384 (C = OC = 48, B*T = 16384), 2

The config is this machine's record at MxNxK (its best kernel, whatever the record runs), or the
analytical model's where there is none; each variant is verified, then timed: measure.compare, 9
interleaved rounds in random order, a pause after each. Prints GF/s and each variant against the
record's way with dbias, and against BLAS. Run on an idle machine; OPENBLAS_CORETYPE is unset here.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numpy as np

from autotune import build, load, measure, space, verify
from autotune.ops import KERNELS, Problem

KERNEL = KERNELS["backward_weight"]


def config_of(problem, threads):
    entry = load.winners().by_problem.get(problem)
    config = entry.record.config if entry else space.analytical_config(problem)
    return dataclasses.replace(config, threads=threads), "the record's" if entry else "the model's"


def main(size="48x48x16384", threads="2"):
    problem = Problem("backward_weight", *map(int, size.split("x")))
    config, whose = config_of(problem, int(threads))
    arrays = KERNEL.inputs(problem, seed=1)
    no_dbias = {**arrays, "dbias": np.empty(0, np.float32)}
    contenders = {}
    for held in (False, True):
        variant = dataclasses.replace(config, sums_in_registers=held)
        function = build.build_kernel(KERNEL, variant).function(KERNEL)
        failure = verify.Reference(KERNEL, problem).check(function)
        if failure is not None:
            raise SystemExit(f"{variant.label()}: {failure}")
        way = "held in registers" if held else "added per row"
        for name, a in ((f"dbias {way}", arrays), (f"no dbias ({way})", no_dbias)):
            contenders[name] = measure.on_threads(variant.threads, lambda f=function, a=a: KERNEL.call(f, a))
    blas = KERNEL.baseline("blas")
    contenders["BLAS with beta"] = lambda: KERNEL.call(blas, arrays)
    with measure.thread_count(config.threads):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
    base = "dbias added per row"
    print(f"{problem}, {whose} config {dataclasses.replace(config, sums_in_registers=False).label()}; "
          f"{config.threads} thread(s), 9 interleaved rounds")
    for name, timing in timings.items():
        print(f"  {name:28s} {timing.gflops(problem.flops):6.1f} GF/s; {measure.speedup(timing, timings[base]).describe()} "
              f"the kernel with dbias added per row; {measure.speedup(timing, timings['BLAS with beta']).describe()} BLAS")


if __name__ == "__main__":
    main(*sys.argv[1:])
