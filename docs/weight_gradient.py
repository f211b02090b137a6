"""Where the weight gradient's time goes: two task layouts of the same template, with and without
dbias, against BLAS with beta (compiled, what the loaders run where BLAS won), and the cost of
packing inp alone.

    python docs/weight_gradient.py [B,T,C,OC]      # default 4,1024,768,768

The layouts, each 12 x 32 (an AVX-512 target's two vectors; on AVX2 use NR = 16 and MR = 6 by
editing LAYOUTS): "square tasks" (MC x NC = 192 x 256, panels outer, A packed by each task), what
the Zen 4 search stored before its studies were seeded with the other kernels' winners, and
"tasks across N" (MC = 24 rows, NC past all of C, A read in place), what the seeded search stored.
Each is verified before it is timed. measure.compare: 9 interleaved rounds in random order, a pause
after each contender. Then pack_panels (inp's K blocks into NR-wide panels, the copy each K block
starts with) alone, best of 20. Run on an idle machine; OPENBLAS_CORETYPE is unset in this process.
"""
import os
import sys
import time

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba
import numpy as np

from autotune import bench, build, machine, measure, space, verify
from autotune.ops import KERNELS, Shape

KERNEL = KERNELS["backward_weight"]
LAYOUTS = {
    "square tasks": space.Config(12, 32, 768, 16, 8, "panels-outer", 2, pack_a=True),
    "tasks across N": space.Config(12, 32, 768, 2, 32, "rows-outer", 2, pack_a=False),
}


def built(config, problem):
    module = build.build_kernel(KERNEL, config).module
    failure = verify.Reference(KERNEL, problem).check(module.matmul_backward_weight)
    if failure is not None:
        raise SystemExit(f"{config.label()}: {failure}")
    return module


def pack_seconds(module, inp, kc):
    """Best of 20 passes of packing every K block of inp, as the kernel does before each block's tasks."""
    K, N = inp.shape
    panels = module.aligned_empty(((N + module.NR - 1) // module.NR, min(kc, K), module.NR))
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        for k_begin in range(0, K, kc):
            module.pack_panels(panels, inp, k_begin, min(kc, K - k_begin))
        best = min(best, time.perf_counter() - start)
    return best


def main(shape_text="4,1024,768,768"):
    problem = KERNEL.problem(Shape.parse(shape_text))
    arrays = KERNEL.inputs(problem)
    without_dbias = {**arrays, "dbias": np.zeros(0, np.float32)}
    contenders = {}
    modules = {}
    for name, config in LAYOUTS.items():
        modules[name] = built(config, problem)
        fn = modules[name].matmul_backward_weight
        contenders[name] = lambda fn=fn: KERNEL.call(fn, arrays)
        contenders[f"{name}, no dbias"] = lambda fn=fn: KERNEL.call(fn, without_dbias)
    contenders["blas"] = lambda: KERNEL.call(KERNEL.blas, arrays)
    contenders["blas, no dbias"] = lambda: KERNEL.call(KERNEL.blas, without_dbias)
    threads = machine.max_threads()
    with measure.thread_count(threads):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
        packing = {name: pack_seconds(modules[name], arrays["inp"], LAYOUTS[name].kc) for name in LAYOUTS}
    peak = bench.fma_peak(threads)  # GF/s, the best measured on this machine kind
    print(f"{problem} ({shape_text}), {threads} threads, 9 interleaved rounds; OPENBLAS_CORETYPE unset here")
    for name, timing in timings.items():
        gflops = timing.gflops(problem.flops)
        print(f"  {name:26s} {timing.median * 1e3:7.2f} ms a call, {gflops:6.1f} GF/s, {gflops / peak:.0%} of the FMA peak; "
              f"{measure.speedup(timing, timings['blas']).describe()} BLAS with dbias")
    for name, seconds in packing.items():
        print(f"  packing inp for {name}: {seconds * 1e3:.2f} ms a call (best of 20, numba threads {numba.get_num_threads()})")


if __name__ == "__main__":
    main(*sys.argv[1:])
