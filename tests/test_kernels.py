"""Every template with a sample of parameter sets, at sizes that do not divide the tiles."""
import numba
import pytest

from autotune import verify
from autotune.ops import KERNELS, Problem
from conftest import SAMPLE_CASES, SAMPLE_CONFIGS, kernel_function

# (M, N, K) in each kernel's own terms: ones, primes, odd sizes, K across several blocks.
SIZES = [(1, 1, 1), (1, 17, 3), (13, 1, 130), (37, 83, 300), (97, 61, 257), (64, 96, 64)]


@pytest.mark.parametrize("name, config", SAMPLE_CASES,
                         ids=[f"{name}-{config.label().replace(' ', '_')}" for name, config in SAMPLE_CASES])
def test_kernel_matches_float64_reference(name, config):
    kernel = KERNELS[name]
    fn = kernel_function(kernel, config)
    numba.set_num_threads(config.threads)
    for M, N, K in SIZES:
        problem = Problem(kernel.name, M, N, K)
        assert verify.Reference(kernel, problem, seed=M + N + K).check(fn) is None, problem
    assert verify.check(kernel, fn, config, verify.Reference(kernel, Problem(kernel.name, 5, 7, 3))) is None


@pytest.mark.parametrize("config", [SAMPLE_CONFIGS[1], SAMPLE_CONFIGS[-1]], ids=["packed", "unpacked"])
@pytest.mark.parametrize("name", ["backward_input", "backward_weight"])
def test_backward_accumulates_instead_of_overwriting(name, config):
    """Run twice from known contents: the second call must add the same update again."""
    kernel = KERNELS[name]
    fn = kernel_function(kernel, config)
    numba.set_num_threads(config.threads)
    problem = Problem(kernel.name, 29, 45, 33)
    arrays = kernel.inputs(problem)
    start = {name: arrays[name].astype("float64") for name in kernel.outputs}
    expected = {name: e for name, (e, _) in kernel.tolerance_terms(arrays).items()}
    kernel.call(fn, arrays)
    kernel.call(fn, arrays)
    for name in kernel.outputs:
        twice = start[name] + 2 * (expected[name] - start[name])
        assert abs(arrays[name] - twice).max() < 1e-3, name


def test_tolerance_holds_for_long_sums():
    """dweight sums over B*T = 65536 rows; the forward over C = 3072: correct kernels stay inside the bound."""
    config = SAMPLE_CONFIGS[1]
    for name, size in [("backward_weight", (16, 40, 65536)), ("forward", (24, 40, 3072))]:
        kernel = KERNELS[name]
        fn = kernel_function(kernel, config)
        numba.set_num_threads(config.threads)
        assert verify.Reference(kernel, Problem(name, *size)).check(fn) is None, name
