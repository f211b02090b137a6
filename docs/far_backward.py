"""What a backward should run at a size nobody tuned near: BLAS with beta for both kernels, the
analytical model's configs for both, or the model's weight kernel beside BLAS for the input, with
PyTorch (if installed) as the yardstick, per llm.c shape.

    python docs/far_backward.py [B,T,C,OC ...]   # default: the sweep's small-C shapes with nothing tuned near

Every kernel is verified before it is timed. measure.compare: 7 interleaved rounds in random order,
a pause after each contender; prints GF/s of the whole backward (dinp, dweight, dbias) per
contender and the paired speedup of each over BLAS. Run on an idle machine.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba

from autotune import bench, measure, ops, space, verify
from autotune.ops import KERNELS, OPS, Shape

DEFAULT_SHAPES = ["4,1024,48,48", "16,256,48,48", "16,1024,48,48", "64,64,48,48", "64,256,48,48",
                  "64,1024,48,48", "16,1024,192,192", "64,256,192,192", "64,1024,192,192"]


def analytical(kernel, problem):
    config = space.analytical_config(problem)
    return verify.Verifier(kernel, problem).built(config), config


def backward(runs, arrays):
    """One backward: each kernel's function in turn on its arrays, numba's threads set per kernel."""
    def run():
        for kernel, (fn, threads) in runs:
            if threads:
                numba.set_num_threads(threads)
            kernel.call(fn, arrays[kernel.name])
    return run


def time_shape(shape):
    kernels = [KERNELS[name] for name in OPS["backward"]]
    problems = [k.problem(shape) for k in kernels]
    arrays = {k.name: k.inputs(p) for k, p in zip(kernels, problems)}
    model = [analytical(k, p) for k, p in zip(kernels, problems)]
    blas = [(k, (k.blas, None)) for k in kernels]
    tuned = [(k, (fn, c.threads)) for k, (fn, c) in zip(kernels, model)]
    contenders = {"BLAS + BLAS": backward(blas, arrays), "model + model": backward(tuned, arrays),
                  "BLAS + model": backward([blas[0], tuned[1]], arrays)}
    torch = ops.torch_or_none()  # on numba's thread count (2 on these machines)
    if torch is not None:  # bench's PyTorch contender, on tensors sharing these arrays
        contenders["torch"] = bench.torch_op(torch, "backward", [[arrays[k.name][n] for n in k.arguments]
                                                                 for k in kernels])
    with measure.thread_count(2):
        timings = measure.compare(contenders, rounds=7, settle_after=tuple(contenders))
    flops = sum(p.flops for p in problems)
    print(f"{shape}  model: {' | '.join(c.label() for _, c in model)}")
    for name, timing in timings.items():
        print(f"  {name:14s} {timing.gflops(flops):6.1f} GF/s  "
              f"x BLAS + BLAS {measure.speedup(timing, timings['BLAS + BLAS']).describe()}")


def main():
    for text in sys.argv[1:] or DEFAULT_SHAPES:
        time_shape(Shape.parse(text))


if __name__ == "__main__":
    main()
