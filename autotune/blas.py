"""BLAS called from compiled code: what the loaders run for a kernel where BLAS won its size or
nothing was tuned near it.

Each kernel's "blas" baseline (ops.py): the formulation of its `scipy_blas` (sgemm with beta = 1
into the output, no temporaries), without scipy's Python wrapper around each call: at 4,64,48,48, interleaved (9
rounds), the forward took 31.0 us a call through scipy and 24.4 here, the backward (two sgemm
calls and dbias; scipy's needs an sgemv and a vector of ones) 76.0 and 63.6; at 8,128,192,192 and
above they are the same BLAS call (0.99-1.02x). `python docs/compiled_blas.py` times it. Callable from Python and from @njit code
(tuned.njit's dispatch). The sgemm is numpy's own where it exports one (see numpy_sgemm).

sgemm is Fortran's: column-major. A C-order (rows, cols) array is a Fortran (cols, rows) one with
leading dimension cols, so each product below is written transposed: C = A @ B is C.T = B.T @ A.T.
"""
import ctypes
import importlib
import sys

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import get_cython_function_address, intrinsic

_NOT_TRANSPOSED, _TRANSPOSED = ord("n"), ord("t")
SGEMM_SYMBOL = "autotune_sgemm"  # the name compiled code calls sgemm by; its address is set at import


def numpy_sgemm():
    """(name, address) of the 64-bit-integer sgemm that numpy's own BLAS exports, or None.

    Why numpy's and not scipy's (what numba's np.dot calls): a process with numpy and scipy holds
    two OpenBLAS libraries, each with its own threads, which spin for a while after a call. A call
    into one while the other's threads spin fights them for the cores: on a 2-core Zen 3, a forward
    through scipy's OpenBLAS followed by one through numpy's ran 121x slower at 4,64,48,48 and 3.7x
    at 8,128,192,192 than two through the same library (interleaved, 7 rounds). A user's own
    numpy matmuls run numpy's, so the tuned ops do too."""
    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    library = ctypes.CDLL(importlib.import_module(f"{core}._multiarray_umath").__file__)  # finds its BLAS too
    for name in ("scipy_sgemm_64_", "sgemm_64_"):  # numpy's scipy-openblas wheels (2.x), openblas64_ (1.26)
        if hasattr(library, name):
            return name, ctypes.cast(getattr(library, name), ctypes.c_void_p).value
    return None


def _sgemm_source():
    """Register SGEMM_SYMBOL: numpy's sgemm, else scipy's (32-bit integers; they read the low half
    of the 64-bit values passed, which holds the value on a little-endian CPU: sizes are < 2**31)."""
    found = numpy_sgemm()
    if found is None:
        if sys.byteorder != "little":
            raise ImportError("autotune.blas: numpy's BLAS has no 64-bit-integer sgemm and this CPU is big-endian")
        found = "scipy.linalg.cython_blas sgemm", get_cython_function_address("scipy.linalg.cython_blas", "sgemm")
    llvm.add_symbol(SGEMM_SYMBOL, found[1])  # resolved when code is linked: numba's on-disk cache stays valid
    return found[0]


SGEMM_SOURCE = _sgemm_source()  # which sgemm the compiled calls reach


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


@njit(cache=True)
def forward(out, inp, weight, bias):
    """out[M, N] = inp[M, K] @ weight[N, K].T + bias[N]: the bias rows copied in, then beta = 1."""
    M, N = out.shape
    K = inp.shape[1]
    if bias.shape[0]:
        for i in range(M):  # element loops: numba's slice assignment ran 5x slower here
            for j in range(N):
                out[i, j] = bias[j]
    beta = 1.0 if bias.shape[0] else 0.0
    _sgemm(_TRANSPOSED, _NOT_TRANSPOSED, N, M, K, weight, K, inp, K, beta, out, N)


@njit(cache=True)
def backward_input(dinp, dout, weight):
    """dinp[M, N] += dout[M, K] @ weight[K, N], beta = 1."""
    M, N = dinp.shape
    K = dout.shape[1]
    _sgemm(_NOT_TRANSPOSED, _NOT_TRANSPOSED, N, M, K, weight, N, dout, K, 1.0, dinp, N)


@njit(cache=True)
def backward_weight(dweight, dbias, dout, inp):
    """dweight[M, N] += dout[K, M].T @ inp[K, N], beta = 1; dbias[M] += dout summed over K (if given)."""
    M, N = dweight.shape
    K = dout.shape[0]
    _sgemm(_NOT_TRANSPOSED, _TRANSPOSED, N, M, K, inp, N, dout, M, 1.0, dweight, N)
    if dbias.shape[0]:
        for k in range(K):
            for i in range(M):
                dbias[i] += dout[k, i]
