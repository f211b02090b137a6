"""A forward tile started from a bias slice taken once per tile, against today's `bias[j0 + j]`: a
template change measured, not applied (it would change the code of every kernel, and so every
record; README, "Where the time goes").

    python docs/bias_slice.py MxNxK [MR NR KC ROW_TILES COL_PANELS ORDER]

Without a config, the stored winner of this machine at MxNxK (tuned/forward-MxNxK-<id>.json). The
variant is the rendered source with the tile start's loop edited; both are verified, then timed:
measure.compare, 9 interleaved rounds in random order, a pause after each, A read in place.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import build, load, machine, measure, render, space, verify
from autotune.ops import KERNELS, Problem

KERNEL = KERNELS["forward"]
TODAY = """                for r in range(MR):
                    for j in range(NR):
                        acc[r, j] = bias[j0 + j]"""
SLICE = """                start = bias[j0:j0 + NR]
                for r in range(MR):
                    for j in range(NR):
                        acc[r, j] = start[j]"""


def config_of(problem, fields):
    if fields:
        mr, nr, kc, row_tiles, col_panels, order = fields
        return space.Config(int(mr), int(nr), int(kc), int(row_tiles), int(col_panels), order,
                            machine.max_threads(), pack_a=False)
    choice = load.winners().choice(problem)
    if choice.origin != "tuned" or choice.config is None:
        raise SystemExit(f"no stored forward winner at {problem} here: give a config")
    return choice.config


def main(size, *fields):
    problem = Problem("forward", *map(int, size.split("x")))
    config = config_of(problem, fields)
    source = render.render(KERNEL, config)
    assert TODAY in source, "the template's tile start changed: edit TODAY"
    arrays = KERNEL.inputs(problem)
    contenders = {}
    for name, text in (("bias[j0 + j]", source), ("bias slice", source.replace(TODAY, SLICE))):
        function = build.build(text, render.COMPILE_FLAGS).function(KERNEL)
        for check in (problem, Problem("forward", 37, 83, 300)):
            failure = verify.Reference(KERNEL, check).check(function)
            if failure is not None:
                raise SystemExit(f"{name} at {check}: {failure}")
        contenders[name] = measure.on_threads(config.threads, lambda function=function: KERNEL.call(function, arrays))
    with measure.thread_count(machine.max_threads()):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
    print(f"{problem}, {config.label()}; 9 interleaved rounds")
    for name, timing in timings.items():
        print(f"  {name:13s} {timing.gflops(problem.flops):6.1f} GF/s; "
              f"{measure.speedup(timing, timings['bias[j0 + j]']).describe()} today's start")


if __name__ == "__main__":
    main(*sys.argv[1:])
