"""BLAS on the kernels' threads (autotune.blas since 2026-12-01) against the same sgemm calls on
OpenBLAS's own threads (what autotune.blas ran before): each op alone, and the training step where
a tuned kernel and BLAS follow each other.

    python docs/one_pool.py [SHAPE] [ROUNDS]     # default 16,1024,48,48, 11 rounds

"one pool": autotune.blas as the loaders call it (OpenBLAS set to one thread, numba's workers each
run sgemm on a share). "OpenBLAS's threads": the same per-share functions of autotune.blas called
once for the whole op, OpenBLAS left at its own count. The kernels are this machine's records at
SHAPE where it has them (the best kernel a record kept, whatever it runs), else the analytical
configs (space.analytical_config, what an untuned size runs); each is verified first. The step is
forward, then dinp, then dweight, as llm.c runs them. measure.compare: ROUNDS interleaved rounds in
random order, a pause after every contender (so each starts with the other pool's threads asleep),
2 threads for numba and BLAS. Prints GF/s and paired median ratios. Run on an idle machine;
OPENBLAS_CORETYPE is unset here.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import blas, build, measure, search, space, store, verify
from autotune.ops import KERNELS, OPS, Shape

THREADS = 2


def own_threads(name):
    """The op's sgemm calls as one call each, on OpenBLAS's own threads."""
    if name == "forward":
        return lambda out, inp, weight, bias: blas._forward_rows(out, inp, weight, bias, 0, out.shape[0])
    if name == "backward_input":
        return lambda dinp, dout, weight: blas._input_rows(dinp, dout, weight, 0, dinp.shape[0])
    return lambda dweight, dbias, dout, inp: blas._weight_block(dweight, dbias, dout, inp, 0, dout.shape[0], 0, dweight.shape[0])


def kernel_config(problem, stored):
    entry = stored.get(problem)
    if entry is not None:
        return entry.record.config, "record"
    return space.analytical_config(problem), "analytical"


def main(shape_text="16,1024,48,48", rounds="11"):
    shape = Shape.parse(shape_text)
    stored = search._usable_records(store.tuned_dir())
    ops, flops = {}, {}
    for name in OPS["all"]:
        kernel = KERNELS[name]
        problem = kernel.problem(shape)
        config, origin = kernel_config(problem, stored)
        function = build.build_kernel(kernel, config).function(kernel)
        for label, fn in (("kernel", function), ("one pool", kernel.blas), ("own threads", own_threads(name))):
            failure = verify.Reference(kernel, problem).check(fn)
            if failure is not None:
                sys.exit(f"{name} {label}: {failure}")
        arrays = kernel.inputs(problem, seed=1)
        functions = {"kernel": function, "one pool": kernel.blas, "own threads": own_threads(name)}
        ops[name] = {use: lambda k=kernel, f=f, a=arrays: k.call(f, a) for use, f in functions.items()}
        ops[name]["kernel"] = measure.on_threads(config.threads, ops[name]["kernel"])
        flops[name] = problem.flops
        print(f"{name}: {origin} config {config.label()}")

    def step(plan):
        calls = [ops[name][use] for name, use in zip(OPS["all"], plan)]
        return lambda: [call() for call in calls]

    plans = {"all on OpenBLAS's threads": ("own threads",) * 3, "all on one pool": ("one pool",) * 3,
             "all kernels": ("kernel",) * 3,
             "forward kernel, backward on OpenBLAS's threads": ("kernel", "own threads", "own threads"),
             "forward kernel, backward on one pool": ("kernel", "one pool", "one pool")}
    contenders = {f"step: {name}": step(plan) for name, plan in plans.items()}
    for name in OPS["all"]:
        contenders.update({f"{name}: {use}": ops[name][use] for use in ("one pool", "own threads")})
    with measure.thread_count(THREADS):
        t = measure.compare(contenders, rounds=int(rounds), settle_after=tuple(contenders), seed=0)
    print(f"{shape}, {THREADS} threads, {rounds} interleaved rounds, {blas.SGEMM_SOURCE}")
    for name in OPS["all"]:
        pool, own = t[f"{name}: one pool"], t[f"{name}: own threads"]
        print(f"  {name:16s} one pool {pool.gflops(flops[name]):6.1f} GF/s, OpenBLAS's threads "
              f"{own.gflops(flops[name]):6.1f}: one pool {measure.speedup(pool, own).describe()}")
    base = t["step: all on OpenBLAS's threads"]
    for name in plans:
        print(f"  step {name:48s} {measure.speedup(t[f'step: {name}'], base).describe()} the step all on "
              f"OpenBLAS's threads")


if __name__ == "__main__":
    main(*sys.argv[1:])
