"""The check that gates every candidate: right answers pass, wrong ones are caught with a reason."""
import numpy as np

from autotune import verify
from autotune.ops import KERNELS, Problem


def numpy_forward(out, inp, weight, bias):
    np.matmul(inp, weight.T, out=out)
    out += bias


def test_float32_blas_result_passes_at_large_k():
    # The bound must hold for a correct float32 computation with a long sum.
    kernel = KERNELS["forward"]
    assert verify.Reference(kernel, Problem("forward", 8, 16, 65536)).check(numpy_forward) is None


def test_a_missing_term_is_caught():
    def drops_last_k(out, inp, weight, bias):
        numpy_forward(out, inp[:, :-1].copy(), weight[:, :-1].copy(), bias)

    reason = verify.Reference(KERNELS["forward"], Problem("forward", 9, 11, 300)).check(drops_last_k)
    assert reason and reason.startswith("out[") and "tolerance" in reason


def test_nan_and_untouched_outputs_are_caught():
    def writes_nan(out, inp, weight, bias):
        numpy_forward(out, inp, weight, bias)
        out[3, 4] = np.nan

    reference = verify.Reference(KERNELS["forward"], Problem("forward", 9, 11, 30))
    assert "out[3, 4]" in reference.check(writes_nan)
    backward = verify.Reference(KERNELS["backward_weight"], Problem("backward_weight", 5, 6, 7))
    assert backward.check(lambda dweight, dbias, dout, inp: None) is not None


def test_tolerance_grows_with_k_and_magnitude():
    assert verify.tolerance(1.0, 10_000) > verify.tolerance(1.0, 100)
    assert verify.tolerance(2.0, 100) > verify.tolerance(1.0, 100)
