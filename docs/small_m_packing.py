"""How much of a forward kernel's call packs the weight, at few rows and at many, and what packing
8 x 8 blocks at a time (the template choice `pack_blocks`) saves.

    python docs/small_m_packing.py [SHAPE ...]   # default: the B=4, T=64 GPT-2 sizes and one at T=1024

The forward packs all of weight (N x K) into NR-wide panels before its tiles run, whatever M is, so
the packing's share of a call grows as M shrinks. Per shape this takes this machine's stored
forward config (whatever the record runs), builds it with the weight packed a row at a time and in
8 x 8 blocks, verifies both, and times, interleaved (9 rounds in random order, 2 threads), each
whole call and each packing step alone (pack_panels into a buffer of the call's own shape). Prints
the packing's share of each call and the paired speedup of the blocked call. Run on an idle machine.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba

from autotune import build, measure, search, store, verify
from autotune.ops import KERNELS, Shape

THREADS = 2
DEFAULT_SHAPES = ["4,64,768,768", "4,64,768,2304", "4,64,768,3072", "4,1024,768,3072"]


def packing(shape):
    kernel = KERNELS["forward"]
    problem = kernel.problem(Shape.parse(shape))
    entry = search._usable_records(store.tuned_dir()).get(problem)
    if entry is None:
        return f"{shape}: no stored forward of this machine"
    arrays = kernel.inputs(problem, seed=1)
    weight = arrays["weight"]
    contenders = {}
    for blocks in (False, True):
        config = dataclasses.replace(entry.record.config, pack_blocks=blocks)
        module = build.build_kernel(kernel, config).module
        function = getattr(module, kernel.entry)
        failure = verify.Reference(kernel, problem).check(function)
        if failure is not None:
            sys.exit(f"{shape} {config.label()}: {failure}")
        panels = module.aligned_empty(((problem.N + module.NR - 1) // module.NR, problem.K, module.NR))
        name = "blocks" if blocks else "rows"
        contenders[f"call, {name}"] = lambda f=function: kernel.call(f, arrays)
        contenders[f"packing, {name}"] = lambda m=module, p=panels: m.pack_panels(p, weight.T, 0, problem.K)
    with measure.thread_count(THREADS):
        t = measure.compare(contenders, rounds=9, seed=0)
    share = {name: t[f"packing, {name}"].median / t[f"call, {name}"].median for name in ("rows", "blocks")}
    return (f"{shape} ({problem.M}x{problem.N}x{problem.K}, {entry.record.config.label()}): packing the weight "
            f"{share['rows']:.1%} of the call a row at a time, {share['blocks']:.1%} in blocks; the call in blocks "
            f"{measure.speedup(t['call, blocks'], t['call, rows']).describe()} the call a row at a time "
            f"({t['call, rows'].gflops(problem.flops):.0f} GF/s)")


if __name__ == "__main__":
    numba.set_num_threads(THREADS)
    for text in sys.argv[1:] or DEFAULT_SHAPES:
        print(packing(text))
