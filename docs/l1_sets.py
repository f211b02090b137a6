"""Rows of A that share an L1 set: the configs behind space.rows_sharing_an_l1_set, timed side by side.

    python docs/l1_sets.py [KERNEL] [B,T,C,OC]      # default forward 4,1024,1024,1024

A kernel that reads A in place walks MR rows K floats apart; where 4K bytes is a multiple of 4 KiB
(K = 1024 here) they all fall in one L1 set. Built from the templates as configs (the search's
validity rule would refuse the 12-row ones read in place, so they are built directly), each
verified, then timed against BLAS with beta: measure.compare, 9 interleaved rounds in random order,
a pause after each contender. An AVX-512 target (NR = 32, two zmm vectors) is assumed. Run on an
idle machine; OPENBLAS_CORETYPE is unset in this process.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import bench, build, machine, measure, space, verify
from autotune.ops import KERNELS, Shape

CONFIGS = {  # 12 x 32 and 8 x 32 register blocks, K blocks of 768, 2 threads
    "8 rows in place, task across N": space.Config(8, 32, 768, 1, 32, "panels-outer", 2, pack_a=False),
    "12 rows in place, task across N": space.Config(12, 32, 768, 1, 32, "panels-outer", 2, pack_a=False),
    "12 rows packed, task across N": space.Config(12, 32, 768, 1, 32, "panels-outer", 2, pack_a=True),
    "8 rows in place, 64-column tasks": space.Config(8, 32, 768, 2, 2, "rows-outer", 2, pack_a=False),
    "12 rows in place, 64-column tasks": space.Config(12, 32, 768, 2, 2, "rows-outer", 2, pack_a=False),
    "12 rows packed, 64-column tasks": space.Config(12, 32, 768, 2, 2, "rows-outer", 2, pack_a=True),
}


def main(kernel_name="forward", shape_text="4,1024,1024,1024"):
    kernel = KERNELS[kernel_name]
    problem = kernel.problem(Shape.parse(shape_text))
    arrays = kernel.inputs(problem)
    contenders = {}
    for name, config in CONFIGS.items():
        function = build.build_kernel(kernel, config).function(kernel)
        failure = verify.Reference(kernel, problem).check(function)
        if failure is not None:
            raise SystemExit(f"{name}: {failure}")
        contenders[name] = lambda function=function: kernel.call(function, arrays)
    contenders["blas"] = lambda: kernel.call(kernel.blas, arrays)
    threads = machine.max_threads()
    with measure.thread_count(threads):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
    peak = bench.fma_peak(threads)
    reference = next(iter(CONFIGS))
    print(f"{problem} ({shape_text}), {threads} threads, L1 {machine.cache_sizes()[1] >> 10} KiB, "
          f"{machine.l1_data_ways()} ways; 9 interleaved rounds, OPENBLAS_CORETYPE unset here")
    for name, timing in timings.items():
        gflops = timing.gflops(problem.flops)
        print(f"  {name:34s} {gflops:6.1f} GF/s, {gflops / peak:.0%} of the FMA peak; "
              f"{measure.speedup(timing, timings[reference]).describe()} the first; "
              f"{measure.speedup(timing, timings['blas']).describe()} BLAS")


if __name__ == "__main__":
    main(*sys.argv[1:])
