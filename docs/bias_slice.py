"""The forward's tile start, both ways: `bias[j0 + j]` indexed, and a slice of NR bias values taken
once per tile (the template choice `bias_slice`; docs/where-the-time-goes.md).

    python docs/bias_slice.py MxNxK [MR NR KC ROW_TILES COL_PANELS ORDER]

Without a config, the stored winner of this machine at MxNxK (tuned/forward-MxNxK-<id>.json), as it
is and with the other tile start. With one, that config (A read in place, every thread) both ways.
Each is verified, then timed: measure.compare, 9 interleaved rounds in random order, a pause after each.
"""
import dataclasses
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

from autotune import build, load, machine, measure, space, verify
from autotune.ops import KERNELS, Problem

KERNEL = KERNELS["forward"]


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
    arrays = KERNEL.inputs(problem)
    contenders = {}
    for name, sliced in (("bias[j0 + j]", False), ("bias slice", True)):
        function = build.build_kernel(KERNEL, dataclasses.replace(config, bias_slice=sliced)).function(KERNEL)
        for check in (problem, Problem("forward", 37, 83, 300)):
            failure = verify.Reference(KERNEL, check).check(function)
            if failure is not None:
                raise SystemExit(f"{name} at {check}: {failure}")
        contenders[name] = measure.on_threads(config.threads, lambda function=function: KERNEL.call(function, arrays))
    with measure.thread_count(machine.max_threads()):
        timings = measure.compare(contenders, rounds=9, settle_after=tuple(contenders), seed=0)
    print(f"{problem}, {dataclasses.replace(config, bias_slice=False).label()}; 9 interleaved rounds")
    for name, timing in timings.items():
        print(f"  {name:13s} {timing.gflops(problem.flops):6.1f} GF/s; "
              f"{measure.speedup(timing, timings['bias[j0 + j]']).describe()} the indexed start")


if __name__ == "__main__":
    main(*sys.argv[1:])
