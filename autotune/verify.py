"""Check a candidate against the float64 reference before anything times it.

The tolerance scales with the summed length K and the size of the terms: a float32 sum of K
products has rounding error around eps * sqrt(K) * sum|a*b| (random rounding; the worst case is
K instead of sqrt(K)). TOLERANCE_FACTOR leaves room for blocked summation orders.
"""
import numpy as np

from autotune.ops import Problem

EPS32 = float(np.finfo(np.float32).eps)
TOLERANCE_FACTOR = 8.0


def tolerance(magnitude, K):
    """Allowed |error| per element, from sum|terms| (magnitude) and the summed length K."""
    return TOLERANCE_FACTOR * EPS32 * np.sqrt(K + 2) * magnitude + np.finfo(np.float32).tiny


class Reference:
    """Inputs and float64 expected outputs of one problem, reused for every candidate of a study."""

    def __init__(self, kernel, problem, seed=0):
        self.kernel = kernel
        self.arrays = kernel.inputs(problem, seed)
        self.expected, self.allowed = {}, {}
        for name, (expected, magnitude) in kernel.tolerance_terms(self.arrays).items():
            self.expected[name] = expected
            self.allowed[name] = tolerance(magnitude, problem.K)

    def check(self, fn):
        """None if `fn` matches the reference, else the reason it does not."""
        arrays = {name: a.copy() if name in self.kernel.outputs else a for name, a in self.arrays.items()}
        self.kernel.call(fn, arrays)
        for name in self.kernel.outputs:
            error = np.abs(arrays[name] - self.expected[name])
            bad = ~(error <= self.allowed[name])  # NaN counts as bad
            if bad.any():
                at = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad, error, -1.0)), error.shape))
                return (f"{name}{list(at)} = {float(arrays[name][at]):.7g}, expected {self.expected[name][at]:.7g} "
                        f"(error {error[at]:.3g} > tolerance {self.allowed[name][at]:.3g}; "
                        f"{int(bad.sum())} of {bad.size} wrong)")
        return None


def edge_problem(kernel, config):
    """A size where every tile loop ends on a partial tile and K spans two blocks."""
    return Problem(kernel.name, M=config.mr * config.row_tiles + 3, N=config.nr * config.col_panels + 5,
                   K=config.kc + 3)


def check(kernel, fn, config, reference):
    """Verify at the edge-case size first (cheap, catches tile bugs), then at the searched size."""
    return Reference(kernel, edge_problem(kernel, config), seed=7).check(fn) or reference.check(fn)
