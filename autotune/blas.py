"""BLAS called from compiled code: what the loaders run for a kernel where BLAS won its size or
nothing was tuned near it.

Each kernel's "blas" baseline (ops.py): the formulation of its `scipy_blas` (sgemm with beta = 1
into the output, no temporaries), without scipy's Python wrapper around each call: at 4,64,48,48, interleaved (9
rounds), the forward took 31.0 us a call through scipy and 24.4 here, the backward (two sgemm
calls and dbias; scipy's needs an sgemv and a vector of ones) 76.0 and 63.6; at 8,128,192,192 and
above they are the same BLAS call (0.99-1.02x). `python docs/compiled_blas.py` times it. Callable from Python and from @njit code
(tuned.njit's dispatch). The sgemm is numpy's own where it exports one (see _link_blas).

sgemm is Fortran's: column-major. A C-order (rows, cols) array is a Fortran (cols, rows) one with
leading dimension cols, so each product below is written transposed: C = A @ B is C.T = B.T @ A.T.

One thread pool: each call runs on numba's threads, the ones the tuned kernels run on. OpenBLAS is
set to one thread for the call, and each of numba's workers runs sgemm on its share (the forward's
and the input gradient's rows; the weight gradient's B*T, into a copy per worker, summed after, or
its rows where its output outnumbers its inputs);
OpenBLAS's own count is restored when the call returns. A process that ran tuned kernels and
OpenBLAS's own threads kept two pools on the cores, and the one that had just run spun while the
other worked: on a 2-core Zen 3 at 16,1024,48,48 a step of the forward's kernel before a backward
through OpenBLAS's threads ran 0.44x the step all on OpenBLAS's threads, and 1.10x with that
backward here (`python docs/one_pool.py`, one run; README "One thread pool"). Under SERIAL_FLOPS,
and where OpenBLAS's thread count cannot be set (numpy's BLAS exports no sgemm or no thread count,
see _link_blas), the calls run on OpenBLAS's own threads, as before.
"""
import ctypes
import importlib
import sys

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import cfunc, njit, prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import get_cython_function_address, intrinsic

_NOT_TRANSPOSED, _TRANSPOSED = ord("n"), ord("t")
SGEMM_SYMBOL = "autotune_sgemm"  # the name compiled code calls sgemm by; its address is set at import
GET_THREADS_SYMBOL = "autotune_blas_get_threads"  # that OpenBLAS's thread count (0: it cannot be set)
SET_THREADS_SYMBOL = "autotune_blas_set_threads"
SERIAL_FLOPS = 4e6  # below this a call runs on OpenBLAS's own threads (README "One thread pool")
SIDE_BY_SIDE_FLOPS = 40e6  # the backward runs its halves side by side below this a half (see backward)
SIDE_BY_SIDE_BYTES = 2 ** 20  # and where dout and inp together take at most this (a Zen 4 core's L2)

# numpy's BLAS: (its sgemm, its thread count's getter and setter), in numpy's scipy-openblas wheels
# (2.x) and openblas64_ (1.26)
_NUMPY_BLAS = (("scipy_sgemm_64_", "scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
               ("sgemm_64_", "openblas_get_num_threads64_", "openblas_set_num_threads64_"))


def _numpy_blas():
    """{name: address} of the functions of _NUMPY_BLAS that numpy's own BLAS exports, for the
    first of its sgemm names that it does (empty if none)."""
    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    library = ctypes.CDLL(importlib.import_module(f"{core}._multiarray_umath").__file__)  # finds its BLAS too
    for names in _NUMPY_BLAS:
        if hasattr(library, names[0]):
            return {name: ctypes.cast(getattr(library, name), ctypes.c_void_p).value
                    for name in names if hasattr(library, name)}
    return {}


@cfunc(types.int32())
def _threads_unknown():
    return 0


@cfunc(types.void(types.int32))
def _threads_kept(count):
    pass


def _link_blas():
    """Register SGEMM_SYMBOL: numpy's sgemm, else scipy's (32-bit integers; they read the low half
    of the 64-bit values passed, which holds the value on a little-endian CPU: sizes are < 2**31).
    Register the thread-count symbols: numpy's OpenBLAS's getter and setter where numpy's sgemm is
    used and they are exported, else a count of 0 (the calls then run on that BLAS's own threads).
    Symbols are resolved when code is linked: numba's on-disk cache stays valid.

    Why numpy's sgemm and not scipy's (what numba's np.dot calls): a process with numpy and scipy
    holds two OpenBLAS libraries, each with its own threads, which spin for a while after a call. A
    call into one while the other's threads spin fights them for the cores: on a 2-core Zen 3, a
    forward through scipy's OpenBLAS followed by one through numpy's ran 121x slower at 4,64,48,48
    and 3.7x at 8,128,192,192 than two through the same library (interleaved, 7 rounds). A user's
    own numpy matmuls run numpy's, so the tuned ops do too."""
    found = _numpy_blas()
    if found:
        names = next(names for names in _NUMPY_BLAS if names[0] in found)
        source, sgemm = names[0], found[names[0]]
        settable = names[1] in found and names[2] in found
        get, set_ = (found[names[1]], found[names[2]]) if settable else (_threads_unknown.address, _threads_kept.address)
    else:
        if sys.byteorder != "little":
            raise ImportError("autotune.blas: numpy's BLAS has no 64-bit-integer sgemm and this CPU is big-endian")
        source, settable = "scipy.linalg.cython_blas sgemm", False
        sgemm = get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
        get, set_ = _threads_unknown.address, _threads_kept.address
    for symbol, address in ((SGEMM_SYMBOL, sgemm), (GET_THREADS_SYMBOL, get), (SET_THREADS_SYMBOL, set_)):
        llvm.add_symbol(symbol, address)
    return source, settable


SGEMM_SOURCE, THREADS_SETTABLE = _link_blas()  # which sgemm the compiled calls reach; whether its thread count can be set


def on_own_threads(flops):
    """Whether a call of `flops` runs on OpenBLAS's own threads rather than numba's (see _workers)."""
    return not THREADS_SETTABLE or flops < SERIAL_FLOPS


def runs_side_by_side(M, C, OC):
    """Whether backward runs the halves of the backward at B*T = M side by side."""
    return not on_own_threads(2.0 * M * C * OC) and _fits_side_by_side(M, C, OC)


@njit(cache=True)
def _fits_side_by_side(M, C, OC):
    """Whether the backward at B*T = M is small enough for its halves side by side (see backward)."""
    return 2.0 * M * C * OC < SIDE_BY_SIDE_FLOPS and 4 * M * (C + OC) <= SIDE_BY_SIDE_BYTES


@intrinsic
def _sgemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """c[m, n] = op(a) @ op(b) + beta * c[m, n], Fortran order, float32: Fortran's sgemm, every
    argument passed by address, integers as 64-bit values."""
    if not all(isinstance(x, types.Array) and x.dtype == types.float32 for x in (a, b, c)):
        raise TypingError("_sgemm takes float32 arrays")
    signature = types.void(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc = args
        pointer = cgutils.voidptr_t
        sgemm = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [pointer] * 13),
                                               SGEMM_SYMBOL)

        def slot(value, ty, as_type):
            cell = cgutils.alloca_once_value(builder, context.cast(builder, value, ty, as_type))
            return builder.bitcast(cell, pointer)

        def data(array, ty):
            return builder.bitcast(context.make_array(ty)(context, builder, array).data, pointer)

        t = sig.args
        one = slot(context.get_constant(types.float32, 1.0), types.float32, types.float32)
        builder.call(sgemm, [
            slot(trans_a, t[0], types.uint8), slot(trans_b, t[1], types.uint8),
            slot(m, t[2], types.int64), slot(n, t[3], types.int64), slot(k, t[4], types.int64),
            one, data(a, t[5]), slot(lda, t[6], types.int64), data(b, t[7]), slot(ldb, t[8], types.int64),
            slot(beta, t[9], types.float32), data(c, t[10]), slot(ldc, t[11], types.int64),
        ])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def _blas_threads(typingctx):
    """OpenBLAS's thread count for its own calls; 0 where it cannot be set."""
    def codegen(context, builder, sig, args):
        get = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), GET_THREADS_SYMBOL)
        return builder.call(get, [])

    return types.int32(), codegen


@intrinsic
def _set_blas_threads(typingctx, count):
    """Set OpenBLAS's thread count for its own calls (for the process: OpenBLAS has no count per thread)."""
    def codegen(context, builder, sig, args):
        set_ = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                              SET_THREADS_SYMBOL)
        builder.call(set_, [context.cast(builder, args[0], sig.args[0], types.int32)])
        return context.get_dummy_value()

    return types.void(count), codegen


@njit(cache=True)
def _workers(flops):
    """(how many shares a call is split into, OpenBLAS's own count to restore after it): as many as
    OpenBLAS would use, run on numba's threads (on fewer if numba's count is lower: prange runs the
    shares in turn). One share, the call runs on OpenBLAS's own threads: where its count cannot be
    set, where it is one, and under SERIAL_FLOPS. There a numba parallel region costs more than it
    saves: at 4,64,48,48 (1.2 MFLOP an op) the ops split ran 0.57-0.63x OpenBLAS's threads, at
    4,256,48,48 and 8,128,96,96 (4.7 and 19 MFLOP) 0.95-1.16x (docs/one_pool.py, one run each)."""
    own = _blas_threads()
    if own <= 1 or flops < SERIAL_FLOPS:
        return 1, own
    return own, own


@njit(cache=True)
def _share(length, worker, workers):
    """[begin, end) of `length` for one of `workers`: equal shares, the remainder spread."""
    return length * worker // workers, length * (worker + 1) // workers


@njit(cache=True)
def _forward_rows(out, inp, weight, bias, begin, end):
    """Rows begin..end of the forward: the bias rows copied in, then beta = 1."""
    N = out.shape[1]
    K = inp.shape[1]
    if bias.shape[0]:
        for i in range(begin, end):  # element loops: numba's slice assignment ran 5x slower here
            for j in range(N):
                out[i, j] = bias[j]
    beta = 1.0 if bias.shape[0] else 0.0
    _sgemm(_TRANSPOSED, _NOT_TRANSPOSED, N, end - begin, K, weight, K, inp[begin:end], K, beta, out[begin:end], N)


@njit(cache=True)
def splits_columns(M, N):
    """Whether forward and backward_input split C's N columns between the workers, else its M rows:
    where B (K x N) is larger than A (M x K). Each worker's sgemm packs all of the operand that its
    share does not divide, so the split divides the larger. At 256 rows (llm.c's default B=4, T=64;
    a scratch timing on a Zen 4, 2 threads, 11 interleaved rounds, 2026-12-05) columns ran 1.04x
    and 1.04x rows for the forward at 768 -> 3072 and 768 -> 2304, 1.11x at 3072 -> 768, and
    1.04-1.05x for the input gradient at the three sizes."""
    return N > M


@njit(cache=True)
def _column_share(N, worker, workers):
    """[begin, end) of N columns for one of `workers`, cut at 16 floats (a cache line on the CPUs
    seen) so that no two workers write one line of a row."""
    begin, end = _share((N + 15) // 16, worker, workers)
    return min(16 * begin, N), min(16 * end, N)


@njit(cache=True)
def _forward_columns(out, inp, weight, bias, begin, end):
    """Columns begin..end of the forward: the bias copied in, then beta = 1 (out's rows N apart)."""
    M, N = out.shape
    K = inp.shape[1]
    if bias.shape[0]:
        for i in range(M):
            for j in range(begin, end):
                out[i, j] = bias[j]
    beta = 1.0 if bias.shape[0] else 0.0
    _sgemm(_TRANSPOSED, _NOT_TRANSPOSED, end - begin, M, K, weight[begin:end], K, inp, K, beta, out[:, begin:], N)


@njit(parallel=True, cache=True)
def forward(out, inp, weight, bias):
    """out[M, N] = inp[M, K] @ weight[N, K].T + bias[N]; the workers split N or M (splits_columns)."""
    M, N = out.shape
    workers, own = _workers(2.0 * M * N * inp.shape[1])
    if workers == 1:
        _forward_rows(out, inp, weight, bias, 0, M)
        return
    columns = splits_columns(M, N)
    _set_blas_threads(1)
    for worker in prange(workers):
        if columns:
            begin, end = _column_share(N, worker, workers)
            if end > begin:
                _forward_columns(out, inp, weight, bias, begin, end)
        else:
            begin, end = _share(M, worker, workers)
            if end > begin:
                _forward_rows(out, inp, weight, bias, begin, end)
    _set_blas_threads(own)


@njit(cache=True)
def _input_rows(dinp, dout, weight, begin, end):
    N = dinp.shape[1]
    K = dout.shape[1]
    _sgemm(_NOT_TRANSPOSED, _NOT_TRANSPOSED, N, end - begin, K, weight, N, dout[begin:end], K, 1.0, dinp[begin:end], N)


@njit(cache=True)
def _input_columns(dinp, dout, weight, begin, end):
    M, N = dinp.shape
    K = dout.shape[1]
    _sgemm(_NOT_TRANSPOSED, _NOT_TRANSPOSED, end - begin, M, K, weight[:, begin:], N, dout, K, 1.0, dinp[:, begin:], N)


@njit(parallel=True, cache=True)
def backward_input(dinp, dout, weight):
    """dinp[M, N] += dout[M, K] @ weight[K, N], beta = 1; the workers split N or M (splits_columns)."""
    M, N = dinp.shape
    workers, own = _workers(2.0 * M * N * dout.shape[1])
    if workers == 1:
        _input_rows(dinp, dout, weight, 0, M)
        return
    columns = splits_columns(M, N)
    _set_blas_threads(1)
    for worker in prange(workers):
        if columns:
            begin, end = _column_share(N, worker, workers)
            if end > begin:
                _input_columns(dinp, dout, weight, begin, end)
        else:
            begin, end = _share(M, worker, workers)
            if end > begin:
                _input_rows(dinp, dout, weight, begin, end)
    _set_blas_threads(own)


@njit(cache=True)
def _weight_block(dweight, dbias, dout, inp, k_begin, k_end, i_begin, i_end):
    """Rows i_begin..i_end of dweight += dout[k_begin:k_end].T @ inp[k_begin:k_end] (beta = 1) and
    of dbias += those rows of dout summed; dout's block is read in place (leading dimension M)."""
    M, N = dweight.shape
    _sgemm(_NOT_TRANSPOSED, _TRANSPOSED, N, i_end - i_begin, k_end - k_begin, inp[k_begin:k_end], N,
           dout[k_begin:k_end, i_begin:i_end], M, 1.0, dweight[i_begin:i_end], N)
    if dbias.shape[0]:
        for k in range(k_begin, k_end):
            for i in range(i_begin, i_end):
                dbias[i] += dout[k, i]


@njit(parallel=True, cache=True)
def _weight_by_rows(dweight, dbias, dout, inp, workers):
    """Each worker its share of dweight's rows (and dbias's): it reads all of inp."""
    for worker in prange(workers):
        begin, end = _share(dweight.shape[0], worker, workers)
        if end > begin:
            _weight_block(dweight, dbias, dout, inp, 0, dout.shape[0], begin, end)


@njit(parallel=True, cache=True)
def _weight_by_k(dweight, dbias, dout, inp, workers):
    """Each worker its share of K: the first adds into dweight and dbias, each other into a zeroed
    copy of its own, added to them after."""
    M, N = dweight.shape
    K = dout.shape[0]
    copies = np.zeros((workers - 1, M, N), np.float32)
    sums = np.zeros((workers - 1, dbias.shape[0]), np.float32)
    for worker in prange(workers):
        begin, end = _share(K, worker, workers)
        if worker == 0:
            _weight_block(dweight, dbias, dout, inp, begin, end, 0, M)
        elif end > begin:
            _weight_block(copies[worker - 1], sums[worker - 1], dout, inp, begin, end, 0, M)
    for i in prange(M):
        for copy in range(workers - 1):
            for j in range(N):
                dweight[i, j] += copies[copy, i, j]
    for copy in range(workers - 1):
        for i in range(dbias.shape[0]):
            dbias[i] += sums[copy, i]


@njit(cache=True)
def splits_rows(M, N, K):
    """Whether backward_weight splits dweight's M rows between the workers (else it splits K):
    where dweight has more elements than dout and inp together."""
    return K * (M + N) < M * N


@njit(cache=True)
def backward_weight(dweight, dbias, dout, inp):
    """dweight[M, N] += dout[K, M].T @ inp[K, N], beta = 1; dbias[M] += dout summed over K (if
    given). The workers split M where dweight has more elements than dout and inp together, else K.

    Split over K, each extra worker's copy of dweight is zeroed and added up after; where dweight
    outnumbers the inputs that costs more than each worker reading all of inp. `python
    docs/weight_split.py` (kept; Zen 3, 2 threads, 9 interleaved rounds, one run, 2026-12-03 10:35
    UTC): splitting M ran 1.07x splitting K at 4,64,768,768, 1.15x at 4,64,768,3072 and 1.13x at
    4,64,3072,768 (K = 256 each); 1.02x at 4,128,768,768 (K = 512), 0.95x at 16,64,768,768, 0.99x
    at 4,64,192,192 and 0.51x at 4,1024,48,48, where it splits K. Three more runs read 4,64,768,768
    at 0.97-1.18x (docs/results.md, "Sizes nobody tuned, 5 rounds")."""
    M, N = dweight.shape
    K = dout.shape[0]
    workers, own = _workers(2.0 * M * N * K)
    if workers == 1:
        _weight_block(dweight, dbias, dout, inp, 0, K, 0, M)
        return
    _set_blas_threads(1)
    if splits_rows(M, N, K):
        _weight_by_rows(dweight, dbias, dout, inp, workers)
    else:
        _weight_by_k(dweight, dbias, dout, inp, workers)
    _set_blas_threads(own)


@njit(parallel=True, cache=True)
def _halves_side_by_side(dinp, dweight, dbias, dout, inp, weight):
    """dinp's half on one worker, dweight's and dbias's on another, each one sgemm call."""
    for half in prange(2):
        if half == 0:
            _input_rows(dinp, dout, weight, 0, dinp.shape[0])
        else:
            _weight_block(dweight, dbias, dout, inp, 0, dout.shape[0], 0, dweight.shape[0])


@njit(cache=True)
def backward(dinp, dweight, dbias, dout, inp, weight):
    """The whole backward in BLAS: backward_input(dinp, dout, weight), then backward_weight(dweight,
    dbias, dout, inp); or, where each half runs on numba's threads (see _workers), is under
    SIDE_BY_SIDE_FLOPS, and dout and inp fit SIDE_BY_SIDE_BYTES, the two halves at once, each whole
    on one of two workers (in turn where numba's thread count is one: the loaders set it to every
    core for this call).

    A half split between two workers pays for its own split (a region of numba's threads, about
    2.3 us a call on a Zen 4; a copy of dweight per worker where it splits K) and for each worker's
    sgemm packing its operands; side by side, each half runs as one call. Against the halves in
    turn (`python docs/side_by_side.py`, Zen 4, 2 threads, 11 interleaved rounds, a pause after
    every contender, one run, 2026-12-05): 1.18x at 4,256,48,48, 1.15x at 4,64,96,96, 1.13x at
    4,64,192,192, 1.07x at 16,64,48,48 (dout and inp 0.2-0.4 MiB); 0.96x at 4,1024,48,48 (18.9
    MFLOP a half, but dout and inp 1.5 MiB: the weight half's worker reads them all where a split
    reads half, and a Zen 4 core's L2 holds 1 MiB); at 75 MFLOP a half 1.02x (8,128,192,192 and
    4,256,192,192, 1.5 MiB) and 0.94x (16,1024,48,48, 6 MiB). Under SERIAL_FLOPS the forward runs
    on OpenBLAS's own threads, which spin after it and would share the cores with the halves (README
    "A backward's halves side by side"). The byte limit is a Zen 4's L2; CPUs with 512 KiB (Zen 3,
    Zen 1) were not measured."""
    M, C = dinp.shape
    OC = dout.shape[1]
    workers, own = _workers(2.0 * M * C * OC)
    if workers > 1 and _fits_side_by_side(M, C, OC):
        _set_blas_threads(1)
        _halves_side_by_side(dinp, dweight, dbias, dout, inp, weight)
        _set_blas_threads(own)
        return
    backward_input(dinp, dout, weight)
    backward_weight(dweight, dbias, dout, inp)
