"""BLAS called from compiled code: what the loaders run for a kernel where BLAS won its size or
nothing was tuned near it.

Each kernel's "blas" baseline (ops.py): the formulation of its `scipy_blas` (sgemm with beta = 1
into the output, no temporaries), without scipy's Python wrapper around each call: at 4,64,48,48, interleaved (9
rounds), the forward took 31.0 us a call through scipy and 24.4 here, the backward (two sgemm
calls and dbias; scipy's needs an sgemv and a vector of ones) 76.0 and 63.6; at 8,128,192,192 and
above they are the same BLAS call (0.99-1.02x). `python docs/compiled_blas.py` times it. Callable from Python and from @njit code
(tuned.njit's dispatch).

sgemm is Fortran's: column-major. A C-order (rows, cols) array is a Fortran (cols, rows) one with
leading dimension cols, so each product below is written transposed: C = A @ B is C.T = B.T @ A.T.
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

_NOT_TRANSPOSED, _TRANSPOSED = ord("n"), ord("t")


@intrinsic
def _sgemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """c[m, n] = op(a) @ op(b) + beta * c[m, n], Fortran order, float32; returns BLAS's status (0: done).

    Through numba_xxgemm, numba's bridge to scipy's BLAS (what numba's np.dot calls): a symbol
    resolved when the code is linked, so numba's on-disk cache of a caller stays valid in another
    process, where a ctypes pointer to sgemm would be a stale address."""
    ensure_blas()
    if not all(isinstance(x, types.Array) and x.dtype == types.float32 for x in (a, b, c)):
        raise TypingError("_sgemm takes float32 arrays")
    signature = types.int32(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc = args
        char, size, pointer = ir.IntType(8), context.get_value_type(types.intp), cgutils.voidptr_t
        bridge = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), [
            char, char, char, size, size, size, pointer, pointer, size, pointer, size, pointer, pointer, size,
        ]), "numba_xxgemm")

        def as_char(value, ty):
            return context.cast(builder, value, ty, types.uint8)

        def as_size(value, ty):
            return context.cast(builder, value, ty, types.intp)

        def data(array, ty):
            return builder.bitcast(context.make_array(ty)(context, builder, array).data, pointer)

        def scalar_slot(value, ty):
            slot = cgutils.alloca_once_value(builder, context.cast(builder, value, ty, types.float32))
            return builder.bitcast(slot, pointer)

        t = sig.args
        one = scalar_slot(context.get_constant(types.float32, 1.0), types.float32)
        return builder.call(bridge, [
            ir.Constant(char, ord("s")), as_char(trans_a, t[0]), as_char(trans_b, t[1]),
            as_size(m, t[2]), as_size(n, t[3]), as_size(k, t[4]),
            one, data(a, t[5]), as_size(lda, t[6]), data(b, t[7]), as_size(ldb, t[8]),
            scalar_slot(beta, t[9]), data(c, t[10]), as_size(ldc, t[11]),
        ])

    return signature, codegen


@njit(cache=True)
def _raise_on_failure(status):
    if status != 0:
        raise RuntimeError("BLAS sgemm failed (numba could not reach scipy's BLAS)")


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
    _raise_on_failure(_sgemm(_TRANSPOSED, _NOT_TRANSPOSED, N, M, K, weight, K, inp, K, beta, out, N))


@njit(cache=True)
def backward_input(dinp, dout, weight):
    """dinp[M, N] += dout[M, K] @ weight[K, N], beta = 1."""
    M, N = dinp.shape
    K = dout.shape[1]
    _raise_on_failure(_sgemm(_NOT_TRANSPOSED, _NOT_TRANSPOSED, N, M, K, weight, N, dout, K, 1.0, dinp, N))


@njit(cache=True)
def backward_weight(dweight, dbias, dout, inp):
    """dweight[M, N] += dout[K, M].T @ inp[K, N], beta = 1; dbias[M] += dout summed over K (if given)."""
    M, N = dweight.shape
    K = dout.shape[0]
    _raise_on_failure(_sgemm(_NOT_TRANSPOSED, _TRANSPOSED, N, M, K, inp, N, dout, M, 1.0, dweight, N))
    if dbias.shape[0]:
        for k in range(K):
            for i in range(M):
                dbias[i] += dout[k, i]
