"""Check a candidate against a float64 reference before anything times it.

Two passes, each on inputs the kernel may only read (read-only arrays):
- exact: small integers (-2..2, outputs and bias too). Every float32 partial sum is then an integer
  below 2**24, so any summation order gives the reference bit for bit: a term dropped, doubled or
  misplaced changes the answer at any K. This is the pass that proves the structure right.
- float: N(0,1) floats, for rounding behaviour. A float32 sum of K products of random sign, blocked
  in any order, errs by about eps * sqrt(K) * sqrt(sum (a*b)**2): each partial sum is rounded, and
  partial sums grow like a random walk. Over the templates' summation orders the measured error
  was at most 1.23 times that, at K from 3 to 65536 (README, Guarantees); TOLERANCE_FACTOR = 4.
  At K = 65536 this allows about 0.03 per element, a twentieth of a typical product term.
"""
import numpy as np

from autotune import build
from autotune.ops import Problem

EPS32 = float(np.finfo(np.float32).eps)
TOLERANCE_FACTOR = 4.0
EXACT_RANGE = 2  # inputs in -2..2: |partial sums| <= 4 K, exact in float32 while K < 2**22


def tolerance(magnitude, K):
    """Allowed |error| per element of the float pass, from sqrt(sum terms**2) (magnitude) and the summed length K."""
    return TOLERANCE_FACTOR * EPS32 * np.sqrt(K + 2) * magnitude + np.finfo(np.float32).tiny


def integer_inputs(kernel, problem, seed):
    """The kernel's arrays filled with integers in -EXACT_RANGE..EXACT_RANGE, as float32."""
    rng = np.random.default_rng(seed)
    return {name: rng.integers(-EXACT_RANGE, EXACT_RANGE + 1, dims).astype(np.float32)
            for name, dims in kernel.array_shapes(problem).items()}


class Reference:
    """Inputs and float64 expected outputs of one problem, reused for every candidate of a study."""

    def __init__(self, kernel, problem, seed=0, exact=False, without=()):
        """`exact`: the integer pass, else the float pass; `without`: optional arrays passed empty (dbias, bias)."""
        self.kernel, self.exact = kernel, exact
        arrays = integer_inputs(kernel, problem, seed) if exact else kernel.inputs(problem, seed)
        for name in without:
            arrays[name] = arrays[name][:0].copy()
        for name, array in arrays.items():
            array.flags.writeable = name in kernel.outputs  # a kernel that writes an input fails
        self.arrays = arrays
        self.expected, self.allowed = {}, {}
        for name, (expected, magnitude) in kernel.reference(arrays).items():
            self.expected[name] = expected
            self.allowed[name] = np.zeros_like(expected) if exact else tolerance(magnitude, problem.K)

    def check(self, fn):
        """None if `fn` matches the reference, else the reason it does not."""
        arrays = {name: a.copy() if name in self.kernel.outputs else a for name, a in self.arrays.items()}
        self.kernel.call(fn, arrays)
        for name, expected in self.expected.items():
            error = np.abs(arrays[name] - expected)
            bad = ~(error <= self.allowed[name])  # NaN counts as bad
            if bad.any():
                at = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad, error, -1.0)), error.shape))
                rule = "the exact pass allows none" if self.exact else f"tolerance {self.allowed[name][at]:.3g}"
                return (f"{name}{list(at)} = {float(arrays[name][at]):.7g}, expected {expected[at]:.7g} "
                        f"(error {error[at]:.3g}; {rule}; {int(bad.sum())} of {bad.size} wrong"
                        f"{', integer inputs' if self.exact else ''})")
        return None


def edge_problem(kernel, config):
    """A size where every tile loop ends on a partial tile and K spans two blocks; where B is read in
    place N must be a multiple of NR, so there only the tasks across N end on a partial one."""
    return Problem(kernel.name, M=config.mr * config.row_tiles + 3,
                   N=config.nr * config.col_panels + 5 if config.pack_b else config.nr * (config.col_panels + 1),
                   K=config.kc + 3)


def optional_arrays(kernel):
    """Arguments that may be passed empty: the forward's bias, the backward's dbias."""
    return tuple(name for name in ("bias", "dbias") if name in kernel.arguments)


class Verifier:
    """Every check a candidate must pass, with the references of the searched size built once."""

    def __init__(self, kernel, problem):
        self.kernel = kernel
        self.searched = [Reference(kernel, problem, seed=0, exact=True)]

    def check(self, fn, config):
        """None if `fn` (built with `config`) is right, else the first reason it is not. Edge size first
        (cheap, catches tile bugs): exact and float, with and without the optional array; then the
        searched size, exact."""
        edge = edge_problem(self.kernel, config)
        references = [Reference(self.kernel, edge, seed=7, exact=True),
                      Reference(self.kernel, edge, seed=8),
                      Reference(self.kernel, edge, seed=9, exact=True, without=optional_arrays(self.kernel))]
        for reference in references + self.searched:
            reason = reference.check(fn)
            if reason:
                return reason
        return None

    def built(self, config):
        """The kernel of `config`, built here and checked (check); ValueError with the reason if it is
        wrong. For the measurement scripts in docs/: the search checks its candidates in a sandbox."""
        function = build.build_kernel(self.kernel, config).function(self.kernel)
        reason = self.check(function, config)
        if reason:
            raise ValueError(f"{config.label()}: {reason}")
        return function
