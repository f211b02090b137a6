"""Where the weight gradient's time goes: two task layouts of the same template and the record this
machine runs (if any), with and without dbias, against BLAS with beta (compiled, what the loaders
run where BLAS won); the first packing layout's task loop alone, inp's panels packed once (wrong
results, timing only: what packing each K block and the fork and join before its tasks cost); and
that packing alone.

    python docs/weight_gradient.py [B,T,C,OC]      # default 4,1024,768,768

The layouts use two vectors for NR (12 x 32 on AVX-512, 6 x 16 on AVX2): "square tasks" (MC x NC
= 16 x 8 register blocks, panels outer, A packed by each task), what the Zen 4 search stored
before its studies were seeded with the other kernels' winners, and "tasks across N" (MC = 2
blocks, NC past all of C, A read in place), what the seeded search stored. Each is verified before
it is timed. measure.compare: 9 interleaved rounds in random order, a pause after each contender.
Then pack_panels (inp's K blocks into NR-wide panels, the copy each K block starts with) alone,
best of 20. Run on an idle machine; OPENBLAS_CORETYPE is unset in this process.
"""
import os
import sys
import time

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba
import numpy as np
from numba import njit, prange

from autotune import bench, build, load, machine, measure, render, space, verify
from autotune.ops import KERNELS, Shape

numba.core.config.SLP_VECTORIZE, numba.core.config.LOOP_VECTORIZE = (render.COMPILE_FLAGS[name] for name in
                                                                      ("SLP_VECTORIZE", "LOOP_VECTORIZE"))
KERNEL = KERNELS["backward_weight"]


def layouts(problem):
    """The two fixed layouts for this CPU's vector width, and the config of the record this machine
    reads for the size (its own or a kin's), whether it runs the kernel or BLAS."""
    nr = 2 * machine.target().lanes
    mr = 12 if nr >= 32 else 6
    found = {
        "square tasks": space.Config(mr, nr, 768, 16, 8, "panels-outer", 2, pack_a=True),
        "tasks across N": space.Config(mr, nr, 768, 2, 1024 // nr, "rows-outer", 2, pack_a=False),
    }
    entry = load.winners().by_problem.get(problem)
    if entry is not None:
        found["the record"] = entry.record.config
    return found


def multiply_only(module):
    """The kernel's loop over K blocks and tasks without packing inp: every block reads the panels of
    inp's first K block (wrong results, timing only). For a layout that packs A and B, without split K."""
    THREADS, MC, NC, KC = module.THREADS, module.MC, module.NC, module.KC
    multiply_block = module.multiply_block

    @njit(parallel=True, fastmath=True)
    def tasks(dweight, dout, b_panels, a_buffers):
        K, M = dout.shape
        N = dweight.shape[1]
        nothing = np.empty(0, np.float32)
        row_tasks, col_tasks = (M + MC - 1) // MC, (N + NC - 1) // NC
        for k_begin in range(0, K, KC):
            for worker in prange(THREADS):
                for task in range(worker, row_tasks * col_tasks, THREADS):
                    i_begin, j_begin = (task // col_tasks) * MC, (task % col_tasks) * NC
                    multiply_block(dweight, dout.T, a_buffers[worker], b_panels, 0, nothing, i_begin, j_begin,
                                   k_begin, min(KC, K - k_begin))
    return tasks


def multiply_only_call(module, arrays):
    dout, inp = arrays["dout"], arrays["inp"]
    dout = dout.reshape(-1, dout.shape[-1]).copy()
    dout.flags.writeable = False  # as the kernel declares it (writable, it ran far slower in a scratch run)
    inp = inp.reshape(dout.shape[0], -1)
    (K, M), N = dout.shape, inp.shape[1]
    b_panels = module.aligned_empty(((N + module.NR - 1) // module.NR, min(module.KC, K), module.NR))
    module.pack_panels(b_panels, inp, 0, min(module.KC, K))
    a_buffers = module.aligned_empty((module.THREADS, module.MC // module.MR, min(module.KC, K), module.MR))
    dweight = np.zeros((M, N), np.float32)
    tasks = multiply_only(module)
    return lambda: tasks(dweight, dout, b_panels, a_buffers)


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
    configs = layouts(problem)
    for name, config in configs.items():
        modules[name] = built(config, problem)
        fn = modules[name].matmul_backward_weight
        contenders[name] = lambda fn=fn: KERNEL.call(fn, arrays)
        contenders[f"{name}, no dbias"] = lambda fn=fn: KERNEL.call(fn, without_dbias)
    packing_layouts = [name for name, c in configs.items() if c.pack_a and c.pack_b and not c.split_k]
    if packing_layouts:
        name = packing_layouts[-1]  # the record where it packs both, else square tasks
        contenders[f"{name}, inp packed once, no dbias"] = multiply_only_call(modules[name], arrays)
    contenders["blas"] = lambda: KERNEL.call(KERNEL.blas, arrays)
    contenders["blas, no dbias"] = lambda: KERNEL.call(KERNEL.blas, without_dbias)
    threads = machine.max_threads()
    with measure.thread_count(threads):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
        packing = {name: pack_seconds(modules[name], arrays["inp"], configs[name].kc)
                   for name in configs if configs[name].pack_b}
    peak = bench.fma_peak(threads)  # GF/s, the best measured on this machine kind
    print(f"{problem} ({shape_text}), {threads} threads, 9 interleaved rounds; OPENBLAS_CORETYPE unset here")
    for name, config in configs.items():
        print(f"  {name}: {config.label()}")
    for name, timing in timings.items():
        gflops = timing.gflops(problem.flops)
        print(f"  {name:44s} {timing.median * 1e3:7.2f} ms a call, {gflops:6.1f} GF/s, {gflops / peak:.0%} of the FMA peak; "
              f"{measure.speedup(timing, timings['blas']).describe()} BLAS with dbias")
    for name, seconds in packing.items():
        print(f"  packing inp for {name}: {seconds * 1e3:.2f} ms a call (best of 20, numba threads {numba.get_num_threads()})")


if __name__ == "__main__":
    main(*sys.argv[1:])
