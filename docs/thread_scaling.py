"""Does the gap to BLAS come from the threads? Each kernel of one llm.c shape, with the config of the
record this machine reads for its size (its own or a kin's, whether it runs the kernel or BLAS),
rendered for one thread and for the record's count, against BLAS with beta called from compiled
code (what the loaders run) on one thread and on every core.

    python docs/thread_scaling.py [B,T,C,OC]      # default 4,1024,768,768

Where the record's config indexes B's panel by offset (records made before `slice_b` existed), the
same config with B sliced is timed too ("B sliced"). Per kernel: the speedup of each on all cores over itself on one (2.0 is perfect on two cores), and
the kernel over BLAS at each count. If the kernel trails BLAS on one thread by what it trails on
two, the gap is in the single-thread code (micro-kernel, packing, blocking); if it scales worse,
it is the split of work or the fork and join. Each rendering is verified before it is timed.
measure.compare: 9 interleaved rounds in random order, a pause after each contender. Run on an idle
machine; OPENBLAS_CORETYPE is unset in this process.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba

from autotune import load, machine, measure, render, verify
from autotune.ops import KERNELS, OPS, Shape

numba.core.config.SLP_VECTORIZE, numba.core.config.LOOP_VECTORIZE = (render.COMPILE_FLAGS[name] for name in
                                                                      ("SLP_VECTORIZE", "LOOP_VECTORIZE"))


def variants(config):
    """{name: config}: the record's, and the same with B sliced where it indexes B by offset."""
    found = {"kernel": config}
    if not config.slice_b:
        found["B sliced"] = dataclasses.replace(config, slice_b=True)
    return found


def scaling(kernel, problem, configs, threads):
    """{name: Timing} of each of `configs` ({name: config}) on 1 and `threads` threads and BLAS on 1
    and on `threads`."""
    verifier = verify.Verifier(kernel, problem)
    kernels = {f"{name}, {n} thread(s)": (n, verifier.built(dataclasses.replace(config, threads=n)))
               for name, config in configs.items() for n in sorted({1, threads})}
    kernels.update({f"blas, {n} thread(s)": (n, kernel.blas) for n in sorted({1, threads})})
    contenders = measure.calls(kernel, kernel.inputs(problem, seed=1), kernels, ())
    with measure.thread_count(threads):
        return measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)


def main(shape_text="4,1024,768,768"):
    shape, threads = Shape.parse(shape_text), machine.max_threads()
    print(f"{shape_text}, 1 and {threads} threads, 9 interleaved rounds; OPENBLAS_CORETYPE unset here; "
          f"target {machine.fingerprint()['target']}")
    for name in OPS["all"]:
        kernel = KERNELS[name]
        problem = kernel.problem(shape)
        entry = load.winners().by_problem.get(problem)
        if entry is None:
            print(f"{problem}: no record here, skipped")
            continue
        configs = variants(entry.record.config)
        timings = scaling(kernel, problem, configs, threads)
        print(f"{problem}: the record's config {entry.record.config.label()} (its use: {entry.record.use})")
        for what in (*configs, "blas"):
            one, many = timings[f"{what}, 1 thread(s)"], timings[f"{what}, {threads} thread(s)"]
            print(f"  {what:8s} {problem.flops / one.median / 1e9:6.1f} GF/s on 1 thread, "
                  f"{problem.flops / many.median / 1e9:6.1f} on {threads}: {threads} threads ran "
                  f"{measure.speedup(many, one).describe()} one")
        for what in configs:
            for n in sorted({1, threads}):
                versus = measure.speedup(timings[f"{what}, {n} thread(s)"], timings[f"blas, {n} thread(s)"])
                print(f"  {what} over BLAS on {n} thread(s): {versus.describe()}")


if __name__ == "__main__":
    main(*sys.argv[1:])
