"""BLAS from compiled code (autotune.blas, each kernel's `blas`) against the same calls through
scipy's Python wrapper (each kernel's `scipy_blas`), per op at one shape.

    python docs/compiled_blas.py [B,T,C,OC] [calls per burst, default 200]

Interleaved: 9 rounds, the two in alternating order, best of 3 bursts each; prints the medians in
microseconds per call and the median per-round ratio scipy / compiled. Run on an idle machine.
"""
import os
import sys
import timeit

import numpy as np

from autotune.ops import KERNELS, OPS, Shape


def timed(names, shape, baseline):
    arrays = {name: KERNELS[name].inputs(KERNELS[name].problem(shape), seed=1) for name in names}

    def run():
        for name in names:
            KERNELS[name].call(KERNELS[name].baseline(baseline), arrays[name])
    return run


def main():
    os.environ.pop("OPENBLAS_CORETYPE", None)
    shape = Shape.parse(sys.argv[1] if len(sys.argv) > 1 else "4,64,48,48")
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    for op in ("forward", "backward"):
        contenders = {"scipy": timed(OPS[op], shape, "scipy_blas"), "compiled": timed(OPS[op], shape, "blas")}
        for run in contenders.values():
            run()
        samples = {name: [] for name in contenders}
        for round_ in range(9):
            order = list(contenders) if round_ % 2 else list(reversed(contenders))
            for name in order:
                samples[name].append(min(timeit.repeat(contenders[name], number=calls, repeat=3)) / calls * 1e6)
        ratio = np.median(np.array(samples["scipy"]) / np.array(samples["compiled"]))
        medians = ", ".join(f"{name} {np.median(values):.1f} us" for name, values in samples.items())
        print(f"{shape} {op}: {medians}; scipy / compiled {ratio:.2f}")


if __name__ == "__main__":
    main()
