"""The forward at C = OC = 48 (K = N = 48: the weight is one L1's worth) and many rows: kernels with
tasks of few and of many rows against BLAS with beta and PyTorch (MKL), where the sweep finds MKL
ahead of OpenBLAS.

    python docs/c48_forward.py [M]     # default 16384 (B*T of 16,1024,48,48)

Configs: the record's at M x 48 x 48 if this machine has one (its best kernel, whatever the record
runs), and register blocks 6 x 16 and 4 x 24 (AVX2's 16 registers) in tasks of 48 and of 256-384
rows, A read in place, tiles started from a bias slice, B sliced, 2 threads. Each is verified,
then timed with BLAS (compiled, as the loader calls it) and torch.addmm on the same arrays:
measure.compare, 9 interleaved rounds in random order, a pause after each, torch on 2 threads.
Run on an idle machine; OPENBLAS_CORETYPE is unset here.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import bench, build, load, measure, ops, space, verify
from autotune.ops import KERNELS, Problem

KERNEL = KERNELS["forward"]
THREADS = 2


def configs(problem):
    layout = {"pack_a": False, "bias_slice": True, "slice_b": True}
    found = {"6x16, tasks of 48 rows": space.Config(6, 16, 64, 8, 4, "rows-outer", THREADS, **layout),
             "6x16, tasks of 384 rows": space.Config(6, 16, 64, 64, 4, "rows-outer", THREADS, **layout),
             "4x24, tasks of 32 rows": space.Config(4, 24, 64, 8, 2, "rows-outer", THREADS, **layout),
             "4x24, tasks of 256 rows": space.Config(4, 24, 64, 64, 2, "rows-outer", THREADS, **layout)}
    entry = load.winners().by_problem.get(problem)
    if entry is not None:
        found[f"the record's ({entry.record.config.label()})"] = entry.record.config
    return found


def main(rows="16384"):
    problem = Problem("forward", int(rows), 48, 48)
    arrays = KERNEL.inputs(problem, seed=1)
    contenders = {}
    for name, config in configs(problem).items():
        function = build.build_kernel(KERNEL, config).function(KERNEL)
        failure = verify.Reference(KERNEL, problem).check(function)
        if failure is not None:
            raise SystemExit(f"{name}: {failure}")
        contenders[name] = measure.on_threads(config.threads, lambda f=function: KERNEL.call(f, arrays))
    blas = KERNEL.baseline("blas")
    contenders["BLAS with beta"] = lambda: KERNEL.call(blas, arrays)
    torch = ops.torch_or_none()  # on numba's thread count (2 on these machines)
    if torch is not None:
        contenders["PyTorch"] = bench.torch_op(torch, "forward", [[arrays[n] for n in KERNEL.arguments]])
    with measure.thread_count(THREADS):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
    best_other = "PyTorch" if torch is not None else "BLAS with beta"
    print(f"{problem}, {THREADS} threads, 9 interleaved rounds; PyTorch: {bench.torch_info(torch)}")
    for name, timing in timings.items():
        print(f"  {name:48s} {timing.gflops(problem.flops):6.1f} GF/s; "
              f"{measure.speedup(timing, timings['BLAS with beta']).describe()} BLAS; "
              f"{measure.speedup(timing, timings[best_other]).describe()} {best_other}")


if __name__ == "__main__":
    main(*sys.argv[1:])
