"""How much of a forward kernel's call packs the weight, at few rows and at many.

    python docs/small_m_packing.py [SHAPE ...]   # default: the B=4, T=64 GPT-2 sizes and one at T=1024

The forward packs all of weight (N x K) into NR-wide panels before its tiles run, whatever M is, so
the packing's share of a call grows as M shrinks. Per shape this builds this machine's stored
forward (its record's exact source, whatever the record runs) and times, interleaved (9 rounds in
random order, 2 threads), the whole call and its packing step alone (pack_panels into a buffer of
the call's own shape). Prints the ratio of their medians. Run on an idle machine.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numba

from autotune import build, measure, search, store
from autotune.ops import KERNELS, Shape

THREADS = 2
DEFAULT_SHAPES = ["4,64,768,768", "4,64,768,2304", "4,64,768,3072", "4,1024,768,3072"]


def packing_share(shape):
    kernel = KERNELS["forward"]
    problem = kernel.problem(Shape.parse(shape))
    entry = search._usable_records(store.tuned_dir()).get(problem)
    if entry is None or entry.source is None:
        return f"{shape}: no stored forward of this machine"
    module = build.build(entry.source, entry.record.compile_flags).module
    arrays = kernel.inputs(problem, seed=1)
    weight = arrays["weight"]
    panels = module.aligned_empty(((problem.N + module.NR - 1) // module.NR, problem.K, module.NR))
    contenders = {"call": lambda: kernel.call(getattr(module, kernel.entry), arrays),
                  "packing": lambda: module.pack_panels(panels, weight.T, 0, problem.K)}
    with measure.thread_count(THREADS):
        t = measure.compare(contenders, rounds=9, seed=0)
    return (f"{shape} ({problem.M}x{problem.N}x{problem.K}, {entry.record.config.label()}): packing the weight "
            f"{t['packing'].median / t['call'].median:.1%} of the call, which runs "
            f"{t['call'].gflops(problem.flops):.0f} GF/s")


if __name__ == "__main__":
    numba.set_num_threads(THREADS)
    for text in sys.argv[1:] or DEFAULT_SHAPES:
        print(packing_share(text))
