"""backward_weight with its threads splitting K, against the same config splitting the M x N
tasks, BLAS with beta (compiled, what the loaders run where BLAS won) and PyTorch (MKL, if
installed), at sizes where dweight (OC x C) is small beside its B*T-long sum.

    python docs/split_k.py [M,N,K ...]      # default: 48,48,4096 48,48,16384 48,48,65536 192,192,16384

The config is the analytical model's for the size (it splits K there, space.analytical_config),
verified before it is timed. measure.compare: 7 interleaved rounds in random order, a pause after
each contender; prints GF/s per contender and the paired speedup of split K over the others.
Run on an idle machine; OPENBLAS_CORETYPE is unset in this process.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import build, measure, space, verify
from autotune.ops import KERNELS, Problem

KERNEL = KERNELS["backward_weight"]
DEFAULT_SIZES = ["48,48,4096", "48,48,16384", "48,48,65536", "192,192,16384"]


def kernel(config, problem):
    fn = build.build_kernel(KERNEL, config).function(KERNEL)
    check = Problem(KERNEL.name, problem.M, problem.N, min(problem.K, 3000))
    failure = verify.Reference(KERNEL, check).check(fn)
    if failure is not None:
        raise SystemExit(f"{config.label()}: {failure}")
    return fn


def torch_backward_weight(arrays):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    dweight, dbias, dout, inp = (torch.from_numpy(arrays[n]) for n in KERNEL.arguments)

    def run():
        dweight.addmm_(dout.t(), inp)
        dbias.add_(dout.sum(0))
    return run


def call(fn, arrays, threads):
    return measure.on_threads(threads, lambda: KERNEL.call(fn, arrays))


def time_size(problem):
    split = space.analytical_config(problem)
    if not split.split_k:
        print(f"{problem}: the analytical config does not split K here ({split.label()})")
        return
    tasks = dataclasses.replace(split, split_k=False)
    arrays = KERNEL.inputs(problem)
    contenders = {"split K": call(kernel(split, problem), arrays, split.threads),
                  "tasks split": call(kernel(tasks, problem), arrays, tasks.threads),
                  "BLAS beta": lambda: KERNEL.call(KERNEL.blas, arrays)}
    torch_run = torch_backward_weight(arrays)
    if torch_run is not None:
        contenders["torch"] = torch_run
    with measure.thread_count(split.threads):
        timings = measure.compare(contenders, rounds=7, settle_after=tuple(contenders))
    print(f"{problem}  {split.label()}")
    for name, timing in timings.items():
        versus = "" if name == "split K" else f"  split K is {measure.speedup(timings['split K'], timing).describe()}"
        print(f"  {name:12s} {timing.gflops(problem.flops):6.1f} GF/s{versus}")


def main():
    for size in sys.argv[1:] or DEFAULT_SIZES:
        time_size(Problem(KERNEL.name, *map(int, size.split(","))))


if __name__ == "__main__":
    main()
