"""The compiled BLAS backward's two halves side by side (each whole on one of numba's workers)
against one after the other (each split between the workers, or on OpenBLAS's own threads under
blas.SERIAL_FLOPS): alone, and in a training step after the compiled BLAS forward.

    python docs/side_by_side.py [SHAPE ...]     # default 4,64,48,48 4,256,48,48 4,64,96,96 4,64,192,192 8,128,192,192

Contenders, each checked against a float64 reference first: "in turn" (blas.backward_input, then
blas.backward_weight: what the loaders ran before blas.backward), "side by side" (the two halves
at once, OpenBLAS at one thread, whatever the size: what blas.backward runs from
blas.SERIAL_FLOPS to blas.SIDE_BY_SIDE_FLOPS a half where dout and inp fit
blas.SIDE_BY_SIDE_BYTES), and "blas.backward" (what the loaders run
now), each alone and after blas.forward ("step"). measure.compare: 11 interleaved rounds in random
order, a pause after every contender, 2 of numba's threads. Prints paired median ratios to "in
turn" with their intervals. Under SERIAL_FLOPS the forward runs on OpenBLAS's own threads, which
spin after it: the side-by-side halves started then share the two cores with them (the step row
shows what that costs). Run on an idle machine; OPENBLAS_CORETYPE is unset here.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numpy as np
from numba import njit

from autotune import blas, measure
from autotune.ops import Shape

THREADS = 2
DEFAULT_SHAPES = ["4,64,48,48", "4,256,48,48", "4,64,96,96", "4,64,192,192", "8,128,192,192"]


@njit
def in_turn(dinp, dweight, dbias, dout, inp, weight):
    blas.backward_input(dinp, dout, weight)
    blas.backward_weight(dweight, dbias, dout, inp)


@njit
def side_by_side(dinp, dweight, dbias, dout, inp, weight):
    own = blas._blas_threads()
    blas._set_blas_threads(1)
    blas._halves_side_by_side(dinp, dweight, dbias, dout, inp, weight)
    blas._set_blas_threads(own)


def arrays(shape):
    rng = np.random.default_rng(0)
    M, C, OC = shape.B * shape.T, shape.C, shape.OC
    return {"out": np.zeros((M, OC), np.float32), "inp": rng.standard_normal((M, C), dtype=np.float32),
            "weight": rng.standard_normal((OC, C), dtype=np.float32), "bias": rng.standard_normal(OC, dtype=np.float32),
            "dout": rng.standard_normal((M, OC), dtype=np.float32), "dinp": np.zeros((M, C), np.float32),
            "dweight": np.zeros((OC, C), np.float32), "dbias": np.zeros(OC, np.float32)}


def check(backward, shape):
    a = arrays(shape)
    backward(a["dinp"], a["dweight"], a["dbias"], a["dout"], a["inp"], a["weight"])
    dout = a["dout"].astype(np.float64)
    for got, expected, summed in ((a["dinp"], dout @ a["weight"], shape.OC), (a["dweight"], dout.T @ a["inp"], len(dout)),
                                  (a["dbias"], dout.sum(axis=0), len(dout))):
        assert np.abs(got - expected).max() <= 1e-5 * np.sqrt(summed) * max(np.abs(expected).max(), 1.0)


def main(shapes):
    ways = {"in turn": in_turn, "side by side": side_by_side, "blas.backward": blas.backward}
    with measure.thread_count(THREADS):
        for text in shapes:
            shape = Shape.parse(text)
            for backward in ways.values():
                check(backward, shape)
            a = arrays(shape)
            args = [a[name] for name in ("dinp", "dweight", "dbias", "dout", "inp", "weight")]
            forward = (a["out"], a["inp"], a["weight"], a["bias"])
            contenders = {}
            for name, backward in ways.items():
                contenders[name] = lambda b=backward: b(*args)
                contenders[f"step, {name}"] = lambda b=backward: (blas.forward(*forward), b(*args))
            t = measure.compare(contenders, rounds=11, settle_after=tuple(contenders), seed=0)
            half = 2.0 * shape.B * shape.T * shape.C * shape.OC
            print(f"{shape}: {half / 1e6:.1f} MFLOP a half, {THREADS} threads, 11 rounds, ratio to in turn")
            for name in ways:
                for prefix in ("", "step, "):
                    base = t[f"{prefix}in turn"]
                    print(f"  {prefix + name:24s} {measure.speedup(t[prefix + name], base).describe()}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_SHAPES)
