"""The check that gates every candidate: right answers pass, and every wrong kernel a person could
plausibly write is caught, at the sizes the search verifies (dweight at K = 65536 included)."""
import importlib.util
import re
import warnings

import numba
import numpy as np
import pytest
from conftest import SAMPLE_CONFIGS

from autotune import build, ops, render, verify
from autotune.ops import KERNELS, Problem

PACKED, IN_PLACE = SAMPLE_CONFIGS[1], SAMPLE_CONFIGS[2]  # K blocks of 128 and 64, tasks of several tiles


def numpy_forward(out, inp, weight, bias):
    np.matmul(inp, weight.T, out=out)
    out += bias


def test_float32_blas_result_passes_the_float_pass_at_large_k():
    kernel = KERNELS["forward"]
    assert verify.Reference(kernel, Problem("forward", 8, 16, 65536)).check(numpy_forward) is None


@pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS)
def test_every_fallback_passes_the_verifier_at_odd_sizes_without_a_warning(kernel):
    """The formulations the loaders may run instead of a kernel, on the verifier's read-only inputs
    (torch warns about those unless told not to), with the bias or dbias present and absent. PyTorch
    only where it is installed (CI does not install it)."""
    for problem in (Problem(kernel.name, 1, 1, 1), Problem(kernel.name, 13, 7, 5), Problem(kernel.name, 101, 67, 3)):
        for name in ops.fallbacks():
            for exact, without in ((True, ()), (False, ()), (True, verify.optional_arrays(kernel))):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    reason = verify.Reference(kernel, problem, exact=exact, without=without).check(kernel.baseline(name))
                assert reason is None, (name, problem, reason)


def test_built_returns_a_checked_kernel_and_refuses_a_wrong_one(monkeypatch):
    kernel = KERNELS["forward"]
    verifier = verify.Verifier(kernel, Problem("forward", 13, 7, 5))
    assert verifier.check(verifier.built(PACKED), PACKED) is None

    class LeavesOutAlone:
        def function(self, kernel):
            return lambda out, inp, weight, bias: None

    monkeypatch.setattr(build, "build_kernel", lambda kernel, config: LeavesOutAlone())
    with pytest.raises(ValueError, match=re.escape(PACKED.label())):
        verifier.built(PACKED)


def test_the_exact_pass_catches_a_dropped_term_that_the_float_tolerance_allows():
    """At K = 65536 the float tolerance is wider than a small product term: dropping one from out[0, 0]
    passes the float pass. With integer inputs every partial sum is exact, so the same mistake is caught."""
    def drops_a_term(out, inp, weight, bias):
        numpy_forward(out, inp, weight, bias)
        products = inp[0].astype(np.float64) * weight[0]
        k = np.argmin(np.where(products == 0, np.inf, np.abs(products)))
        out[0, 0] -= products[k]

    problem = Problem("forward", 8, 16, 65536)
    assert verify.Reference(KERNELS["forward"], problem).check(drops_a_term) is None
    reason = verify.Reference(KERNELS["forward"], problem, exact=True).check(drops_a_term)
    assert reason and reason.startswith("out[0, 0]") and "the exact pass allows none" in reason


def test_nan_untouched_outputs_and_writes_into_inputs_are_caught():
    def writes_nan(out, inp, weight, bias):
        numpy_forward(out, inp, weight, bias)
        out[3, 4] = np.nan

    reference = verify.Reference(KERNELS["forward"], Problem("forward", 9, 11, 30))
    assert "out[3, 4]" in reference.check(writes_nan)
    backward = verify.Reference(KERNELS["backward_weight"], Problem("backward_weight", 5, 6, 7))
    assert backward.check(lambda dweight, dbias, dout, inp: None) is not None

    def writes_its_input(out, inp, weight, bias):
        inp[0, 0] = 1.0

    with pytest.raises(ValueError, match="read-only"):
        reference.check(writes_its_input)


def test_tolerance_grows_with_k_and_magnitude():
    assert verify.tolerance(1.0, 10_000) > verify.tolerance(1.0, 100)
    assert verify.tolerance(2.0, 100) > verify.tolerance(1.0, 100)


# Mutants a person could write by mistake: (name, kernel, config, text in the rendered source, its
# replacement). Most live in the block function all three kernels share, so each is tried on one.
BLOCK_STORE = "            for r in range(n_rows):\n                row = dst[i0 + r, j0:]\n                if n_cols == NR:"
MUTANTS = [
    ("the last k of the sum dropped", "forward", PACKED,
     "depth = min(KC, K - k_begin)", "depth = min(KC, K - k_begin - (k_begin + KC >= K))"),
    ("the last k of every K block dropped", "backward_input", IN_PLACE,
     "            for k in range(depth):\n                b = b_panel", "            for k in range(depth - 1):\n                b = b_panel"),
    ("+= written =", "backward_weight", PACKED, "acc[0, j] += a0 * b[j]", "acc[0, j] = a0 * b[j]"),
    ("the bias skipped", "forward", PACKED, "    padded_bias[:bias.shape[0]] = bias\n", ""),
    ("the existing gradient not loaded (beta = 0)", "backward_input", PACKED,
     "                        acc[r, j] = row[j]", "                        acc[r, j] = 0.0"),
    ("the last row of an edge tile not stored", "forward", IN_PLACE,
     BLOCK_STORE, BLOCK_STORE.replace("range(n_rows)", "range(n_rows - (n_rows < MR))")),
    ("the last column of an edge tile not stored", "backward_weight", IN_PLACE,
     "                    for j in range(n_cols):\n                        row[j] = acc[r, j]",
     "                    for j in range(n_cols - 1):\n                        row[j] = acc[r, j]"),
    ("off by one in a partial panel", "backward_input", PACKED,
     "columns = min(width, source.shape[1] - first)", "columns = min(width, source.shape[1] - first - 1)"),
    ("two tasks writing the same block", "backward_weight", PACKED,
     "(task // col_tasks) * MC", "(task // col_tasks // 2 * 2) * MC"),
    ("the B panel read from the first K block", "forward", IN_PLACE, "b = b_panel[b_k + k]", "b = b_panel[k]"),
    ("dbias summing one row of each K block", "backward_weight", PACKED,
     "for k in range(k_begin, k_begin + depth):", "for k in range(k_begin, k_begin + 1):"),
]
# The sizes the search verifies: GPT-2 small at B=4, T=1024, and dweight of the headline shape (K = 65536).
SEARCH_SIZES = {"forward": [(4096, 768, 768)], "backward_input": [(4096, 768, 768)],
                "backward_weight": [(768, 768, 4096), (768, 768, 65536)]}


def mutant_function(kernel, config, old, new, tmp_path, name):
    source = render.render(kernel, config)
    assert source.count(old) >= 1, f"mutant {name!r} no longer applies to the template"
    path = tmp_path / f"mutant_{abs(hash(name))}.py"
    path.write_text(source.replace(old, new).replace("cache=True", "cache=False"))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    with build._numba_settings(render.COMPILE_FLAGS):
        spec.loader.exec_module(module)
    return getattr(module, kernel.entry)


@pytest.fixture(scope="module")
def verifiers():
    """One Verifier per (kernel, search size): their references are built once, as in a search."""
    return {(name, size): verify.Verifier(KERNELS[name], Problem(name, *size))
            for name, sizes in SEARCH_SIZES.items() for size in sizes}


def test_the_verifier_rejects_every_mutant(verifiers, tmp_path):
    rejected = []
    for name, kernel_name, config, old, new in MUTANTS:
        kernel = KERNELS[kernel_name]
        fn = mutant_function(kernel, config, old, new, tmp_path, name)
        numba.set_num_threads(config.threads)
        for size in SEARCH_SIZES[kernel_name]:
            reason = verifiers[(kernel_name, size)].check(fn, config)
            assert reason is not None, f"mutant {name!r} passed verification at {size}"
        rejected.append(name)
    assert len(rejected) == len(MUTANTS) == 11  # the README quotes the count


def test_the_unmutated_kernels_pass_at_the_search_sizes(verifiers):
    for (name, size), verifier in verifiers.items():
        for config in (PACKED, IN_PLACE):
            fn = build.build_kernel(KERNELS[name], config).function(KERNELS[name])
            numba.set_num_threads(config.threads)
            assert verifier.check(fn, config) is None, (name, size, config)
