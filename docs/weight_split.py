"""The compiled BLAS weight gradient's two ways to share the work between numba's workers: split
K (each extra worker sums into a zeroed copy of dweight, added up after) against split M (each
worker its rows of dweight, reading all of inp). autotune.blas.backward_weight picks split M where
dweight has more elements than dout and inp together (blas.splits_rows), and this times both.

    python docs/weight_split.py [SHAPE ...]     # default 4,64,768,768 4,128,768,768 4,64,768,3072

Each shape's dweight and dbias are checked against a float64 reference for both ways, then the two
are timed with measure.compare: 9 interleaved rounds in random order, a pause after each, OpenBLAS
set to one thread for each call and 2 of numba's workers, as backward_weight runs them. Prints the paired
median ratio (split M over split K) with its interval. Run on an idle machine; OPENBLAS_CORETYPE
is unset here.
"""
import os
import sys

os.environ.pop("OPENBLAS_CORETYPE", None)

import numpy as np
from numba import njit

from autotune import blas, measure
from autotune.ops import Shape

WORKERS = 2
DEFAULT_SHAPES = ["4,64,768,768", "4,128,768,768", "4,64,768,3072"]


@njit
def one_way(dweight, dbias, dout, inp, workers, by_rows):
    """blas's row split or K split on OpenBLAS at one thread, as backward_weight calls them."""
    own = blas._blas_threads()
    blas._set_blas_threads(1)
    if by_rows:
        blas._weight_by_rows(dweight, dbias, dout, inp, workers)
    else:
        blas._weight_by_k(dweight, dbias, dout, inp, workers)
    blas._set_blas_threads(own)


def arrays(shape):
    rng = np.random.default_rng(0)
    K, M, N = shape.B * shape.T, shape.OC, shape.C
    return (np.zeros((M, N), np.float32), np.zeros(M, np.float32),
            rng.standard_normal((K, M), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32))


def check(by_rows, shape):
    dweight, dbias, dout, inp = arrays(shape)
    one_way(dweight, dbias, dout, inp, WORKERS, by_rows)
    expected = dout.astype(np.float64).T @ inp.astype(np.float64)
    tolerance = 1e-5 * np.sqrt(dout.shape[0]) * np.abs(expected).max()
    assert np.abs(dweight - expected).max() < tolerance
    assert np.abs(dbias - dout.astype(np.float64).sum(axis=0)).max() < tolerance


def main(shapes):
    ways = {"split K": False, "split M": True}
    with measure.thread_count(WORKERS):
        for text in shapes:
            shape = Shape.parse(text)
            for by_rows in ways.values():
                check(by_rows, shape)
            operands = arrays(shape)
            calls = {name: (lambda by_rows=by_rows, operands=operands: one_way(*operands, WORKERS, by_rows))
                     for name, by_rows in ways.items()}
            timings = measure.compare(calls, rounds=9, settle_after=tuple(calls))
            ratio = measure.speedup(timings["split M"], timings["split K"])
            K, M, N = shape.B * shape.T, shape.OC, shape.C
            print(f"{text}: split M / split K {ratio.median:.3f} ({ratio.low:.3f}-{ratio.high:.3f}); "
                  f"backward_weight splits {'M' if blas.splits_rows(M, N, K) else 'K'}; "
                  + ", ".join(f"{name} {t.median * 1e3:.3f} ms" for name, t in timings.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT_SHAPES)
