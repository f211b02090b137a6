"""Run by test_bounds.py in a process with NUMBA_BOUNDSCHECK=1 and an empty build cache.

Hypothesis draws a kernel, a config the search could choose (space.choices + space.invalid_reason,
the same validity rules the search applies) and a size; the kernel then runs with numba's bounds
checking on, so any out-of-range index raises IndexError, and must match the float64 reference.
"""
import sys

import numba
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from autotune import build, space, verify
from autotune.ops import KERNELS, Problem

assert numba.config.BOUNDSCHECK, "run with NUMBA_BOUNDSCHECK=1"


@st.composite
def cases(draw):
    kernel = KERNELS[draw(st.sampled_from(sorted(KERNELS)))]
    problem = Problem(kernel.name, *(draw(st.integers(1, 140)) for _ in range(3)))
    options = space.choices(problem)
    config = space.Config.from_dict({name: draw(st.sampled_from(values)) for name, values in options.items()})
    assume(space.invalid_reason(config, problem) is None)
    return kernel, config, problem


@settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(cases())
def test_in_bounds_and_correct(case):
    kernel, config, problem = case
    fn = build.build_kernel(kernel, config).function(kernel)
    numba.set_num_threads(config.threads)
    assert verify.Reference(kernel, problem, seed=problem.M, exact=True).check(fn) is None, (config, problem)
    assert verify.Verifier(kernel, Problem(kernel.name, 3, 5, 2)).check(fn, config) is None


if __name__ == "__main__":
    test_in_bounds_and_correct()
    print("ok")
