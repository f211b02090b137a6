"""Every template with a sample of parameter sets, at sizes that do not divide the tiles."""
import ctypes
import subprocess
import sys

import numba
import numpy as np
import pytest
import threadpoolctl

from autotune import blas, verify
from autotune.ops import KERNELS, Problem
from conftest import (B_IN_PLACE_CONFIGS, LANES, SAMPLE_CASES, SAMPLE_CONFIGS, SLICE_B_CASES, SPLIT_K_CONFIGS,
                      SUMS_IN_REGISTERS_CONFIGS, kernel_function)

# (M, N, K) in each kernel's own terms: ones, primes, odd sizes, K across several blocks.
SIZES = [(1, 1, 1), (1, 17, 3), (13, 1, 130), (37, 83, 300), (97, 61, 257), (64, 96, 64)]


def assert_matches_reference_at_every_size(kernel, fn, sizes=SIZES):
    """Exact (integer inputs: bit for bit) and float passes at every size, with the optional bias/dbias
    present and empty."""
    optional = verify.optional_arrays(kernel)
    for M, N, K in sizes:
        problem = Problem(kernel.name, M, N, K)
        for exact in (True, False):
            for without in ((), optional):
                reference = verify.Reference(kernel, problem, seed=M + N + K, exact=exact, without=without)
                assert reference.check(fn) is None, (problem, exact, without)


@pytest.mark.parametrize("name, config", SAMPLE_CASES,
                         ids=[f"{name}-{config.label().replace(' ', '_')}" for name, config in SAMPLE_CASES])
def test_kernel_matches_float64_reference(name, config):
    """Exact (integer inputs: bit for bit) and float passes, with the optional bias/dbias present and empty."""
    kernel = KERNELS[name]
    fn = kernel_function(kernel, config)
    numba.set_num_threads(config.threads)
    assert_matches_reference_at_every_size(kernel, fn)
    assert verify.Verifier(kernel, Problem(kernel.name, 5, 7, 3)).check(fn, config) is None


@pytest.mark.parametrize("name, config", [
    ("backward_input", SAMPLE_CONFIGS[1]), ("backward_input", SAMPLE_CONFIGS[2]),
    ("backward_weight", SAMPLE_CONFIGS[1]), ("backward_weight", SAMPLE_CONFIGS[2]),
    ("backward_weight", SPLIT_K_CONFIGS[0]), ("backward_weight", B_IN_PLACE_CONFIGS[0]),
    ("backward_weight", B_IN_PLACE_CONFIGS[1]), SLICE_B_CASES[1], SLICE_B_CASES[2], ("backward_weight", B_IN_PLACE_CONFIGS[3]),
    ("backward_weight", SUMS_IN_REGISTERS_CONFIGS[0]), ("backward_weight", SUMS_IN_REGISTERS_CONFIGS[1])],
    ids=["input-A-packed", "input-A-in-place", "weight-A-packed", "weight-A-in-place", "weight-split-K",
         "weight-split-K-B-in-place", "weight-B-in-place", "input-B-sliced", "weight-split-K-B-sliced",
         "weight-split-K-B-in-place-sliced", "weight-split-K-sums-in-registers", "weight-sums-in-registers"])
def test_backward_accumulates_instead_of_overwriting(name, config):
    """Run twice from known integer contents: the second call adds exactly the same update again."""
    kernel = KERNELS[name]
    fn = kernel_function(kernel, config)
    numba.set_num_threads(config.threads)
    arrays = verify.integer_inputs(kernel, Problem(kernel.name, 29, 45 if config.pack_b else 3 * config.nr, 33), seed=3)
    start = {name: arrays[name].astype(np.float64) for name in kernel.outputs}
    expected = {name: e for name, (e, _) in kernel.reference(arrays).items()}
    kernel.call(fn, arrays)
    kernel.call(fn, arrays)
    for name in kernel.outputs:
        np.testing.assert_array_equal(arrays[name], start[name] + 2 * (expected[name] - start[name]), err_msg=name)


@pytest.mark.parametrize("config", B_IN_PLACE_CONFIGS, ids=[c.label().replace(" ", "_") for c in B_IN_PLACE_CONFIGS])
def test_weight_kernels_reading_inp_in_place_match_the_reference(config):
    """N = NR and N = 3 NR (inp's rows are whole panel rows) with M and K that divide nothing, dbias
    present and empty (accumulation: above); an N that NR does not divide raises instead of reading
    past inp."""
    kernel = KERNELS["backward_weight"]
    fn = kernel_function(kernel, config)
    numba.set_num_threads(config.threads)
    for M, N, K in [(1, config.nr, 1), (13, config.nr, 130), (37, 3 * config.nr, 300), (97, 3 * config.nr, 257)]:
        problem = Problem(kernel.name, M, N, K)
        for exact in (True, False):
            for without in ((), verify.optional_arrays(kernel)):
                reference = verify.Reference(kernel, problem, seed=M + K, exact=exact, without=without)
                assert reference.check(fn) is None, (problem, exact, without)
    with pytest.raises(ValueError):
        kernel.call(fn, verify.integer_inputs(kernel, Problem(kernel.name, 5, config.nr - LANES, 7), seed=1))
    with pytest.raises(ValueError):
        kernel.call(fn, verify.integer_inputs(kernel, Problem(kernel.name, 5, config.nr + LANES, 7), seed=1))
    assert verify.Verifier(kernel, Problem(kernel.name, 5, config.nr, 3)).check(fn, config) is None  # the search's checks


def test_the_float_tolerance_holds_for_long_sums_and_the_exact_pass_at_large_k():
    """dweight sums over B*T = 65536 rows; the forward over C = 3072: correct kernels stay inside the
    float bound and give integer inputs' sums bit for bit."""
    config = SAMPLE_CONFIGS[1]
    for name, size in [("backward_weight", (16, 40, 65536)), ("forward", (24, 40, 3072))]:
        kernel = KERNELS[name]
        fn = kernel_function(kernel, config)
        numba.set_num_threads(config.threads)
        assert verify.Reference(kernel, Problem(name, *size)).check(fn) is None, name
        assert verify.Reference(kernel, Problem(name, *size), exact=True).check(fn) is None, name


def test_inputs_are_read_only_to_every_kernel():
    """The generated signatures declare inputs read-only: verification passes them so, and a kernel
    that wrote one would not compile."""
    config = SAMPLE_CONFIGS[0]
    for name, kernel in KERNELS.items():
        reference = verify.Reference(kernel, Problem(name, 5, 6, 7))
        inputs = [n for n in kernel.arguments if n not in kernel.outputs]
        assert not any(reference.arrays[n].flags.writeable for n in inputs)
        assert reference.check(kernel_function(kernel, config)) is None


# Above blas.SERIAL_FLOPS, where numba's workers split a compiled BLAS call: rows of M, or columns
# of N where N > M (1 x 2000; at N = 5 one worker's share is empty), or K for the weight gradient
# (an odd K into a copy per worker) but where dweight outnumbers dout and inp (301 x 257 over
# K = 97: its rows).
SPLIT_BLAS_SIZES = [(301, 97, 257), (1, 2000, 1100), (3, 5, 400001), (301, 257, 97)]


def numpy_blas_threads():
    """numpy's OpenBLAS's thread count, read through the getter autotune.blas calls."""
    found = blas._numpy_blas()
    getter = next(names[1] for names in blas._NUMPY_BLAS if names[1] in found)
    return ctypes.CFUNCTYPE(ctypes.c_int)(found[getter])()


@pytest.mark.parametrize("name", list(KERNELS))
def test_compiled_blas_matches_float64_reference(name):
    """What the loader runs where BLAS won (autotune.blas, numpy's own sgemm), at the same sizes and
    at sizes where numba's workers split the call."""
    kernel = KERNELS[name]
    assert all(2 * M * N * K > blas.SERIAL_FLOPS for M, N, K in SPLIT_BLAS_SIZES)
    assert {blas.splits_rows(M, N, K) for M, N, K in SPLIT_BLAS_SIZES} == {True, False}
    assert {blas.splits_columns(M, N) for M, N, K in SPLIT_BLAS_SIZES} == {True, False}
    assert_matches_reference_at_every_size(kernel, kernel.blas, SIZES + SPLIT_BLAS_SIZES)


@pytest.mark.parametrize("limit", [2, 1])
def test_compiled_blas_leaves_openblas_thread_count_as_it_found_it(limit):
    """A split call sets numpy's OpenBLAS to one thread while numba's workers run it, and restores
    the count; where the user limited BLAS to one thread, the call runs there whole."""
    assert blas.THREADS_SETTABLE
    with threadpoolctl.threadpool_limits(limit, user_api="blas"):
        for kernel in KERNELS.values():
            problem = Problem(kernel.name, *SPLIT_BLAS_SIZES[0])
            assert verify.Reference(kernel, problem, seed=1).check(kernel.blas) is None
            assert numpy_blas_threads() == limit


# blas.backward's sizes (B*T, C, OC): under SERIAL_FLOPS a half (in turn, on OpenBLAS's threads),
# side by side (8.4 MFLOP a half), over SIDE_BY_SIDE_FLOPS and over SIDE_BY_SIDE_BYTES (in turn,
# each half split).
WHOLE_BACKWARD_SIZES = [(1, 1, 1), (37, 83, 30), (1031, 61, 67), (3001, 97, 89), (6007, 23, 29)]


@pytest.mark.parametrize("M, C, OC", WHOLE_BACKWARD_SIZES)
@pytest.mark.parametrize("with_dbias", [True, False])
def test_compiled_blas_whole_backward_accumulates_into_every_gradient(rng, M, C, OC, with_dbias):
    """The loaders' backward where both halves run BLAS: adds to dinp, dweight and dbias (or leaves
    an empty dbias alone), side by side or in turn, and restores OpenBLAS's thread count."""
    flops = [2.0 * M * C * OC for M, C, OC in WHOLE_BACKWARD_SIZES]
    assert [blas.runs_side_by_side(*size) for size in WHOLE_BACKWARD_SIZES] == [False, False, True, False, False]
    assert flops[1] < blas.SERIAL_FLOPS < flops[2] < blas.SIDE_BY_SIDE_FLOPS < flops[3]
    assert blas.SERIAL_FLOPS < flops[4] < blas.SIDE_BY_SIDE_FLOPS and 4 * 6007 * (23 + 29) > blas.SIDE_BY_SIDE_BYTES
    f = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
    dout, inp, weight = f(M, OC), f(M, C), f(OC, C)
    dinp, dweight, dbias = f(M, C), f(OC, C), f(OC) if with_dbias else np.empty(0, np.float32)
    start = {name: x.astype(np.float64) for name, x in (("dinp", dinp), ("dweight", dweight), ("dbias", dbias))}
    threads = numpy_blas_threads()
    blas.backward(dinp, dweight, dbias, dout, inp, weight)
    assert numpy_blas_threads() == threads
    d, x, w = (a.astype(np.float64) for a in (dout, inp, weight))
    # (result, its start plus the float64 sum, sqrt(sum of squared terms), the summed length)
    checks = [(dinp, start["dinp"] + d @ w, np.sqrt((d ** 2) @ (w ** 2)), OC),
              (dweight, start["dweight"] + d.T @ x, np.sqrt((d.T ** 2) @ (x ** 2)), M)]
    if with_dbias:
        checks.append((dbias, start["dbias"] + d.sum(axis=0), np.sqrt((d ** 2).sum(axis=0)), M))
    for got, expected, magnitude, K in checks:
        assert np.all(np.abs(got - expected) <= verify.tolerance(magnitude + np.abs(expected), K))


def test_compiled_blas_falls_back_to_scipys_32_bit_sgemm():
    """Where numpy's BLAS has no 64-bit-integer sgemm, the compiled calls reach scipy's, which reads
    the low half of each 64-bit integer, on its own threads: the same answers (a fresh process, so
    nothing is linked yet)."""
    script = """
import llvmlite.binding as llvm
from numba.extending import get_cython_function_address
from autotune import blas, verify
from autotune.ops import KERNELS, Problem
llvm.add_symbol(blas.SGEMM_SYMBOL, get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
llvm.add_symbol(blas.GET_THREADS_SYMBOL, blas._threads_unknown.address)  # a thread count it cannot set
llvm.add_symbol(blas.SET_THREADS_SYMBOL, blas._threads_kept.address)
for kernel in KERNELS.values():
    for M, N, K in [(1, 1, 1), (37, 83, 300), (97, 61, 257), (301, 97, 257)]:
        assert verify.Reference(kernel, Problem(kernel.name, M, N, K), seed=1).check(kernel.blas) is None
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.stdout.strip() == "ok", done.stderr
