"""The import API for code compiled by numba: the same two entry points, callable inside @njit.

    from tuned.njit import matmul_forward, matmul_backward

    @njit
    def train_step(...):
        matmul_forward(out, inp, weight, bias)                    # bias may be None
        matmul_backward(dinp, dweight, dbias, dout, inp, weight)  # dbias may be None

Dispatch on the shape happens in compiled code: when this module is imported it renders
templates/njit_dispatch.py.jinja from this machine's winners (a new import after a search picks up
new winners) and builds it like any kernel. Validation happens there too: argument types (float32,
C-contiguous, the number of dimensions, writable outputs) when numba compiles the caller, with a
TypingError that names the argument; shapes and overlaps at run time, with a ValueError. Called from
plain Python, they are the Python entry points (autotune.load).

A caller compiled with cache=True keeps the dispatch it was compiled with: after new winners are
stored, its cache must be cleared (or it must be compiled without cache) to pick them up.
"""
import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

from autotune import build, load, machine, render
from autotune.load import overlaps
from autotune.ops import KERNELS

# --- what the generated dispatch calls -------------------------------------------------------


def stored_kernel(stem):
    """The entry function of the stored winner named `stem` (its .json/.py pair in tuned/)."""
    entry = next(e for e in load.winners().by_problem.values() if e.path.stem == stem)
    return build.build(entry.source, entry.record.compile_flags).function(KERNELS[entry.record.problem.kernel])


@njit(cache=True)
def _add_rows(matrix, row):
    """matrix[i] += row for every i (numba cannot type `+=` of a read-only row into a matrix)."""
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            matrix[i, j] += row[j]


# --- the dispatch module, rendered from this machine's winners --------------------------------

SUMMED = {"forward": ("inp", 1), "backward_input": ("dout", 1), "backward_weight": ("dout", 0)}  # where K is


def dispatch_source(winners):
    """The source of the dispatch module for `winners` (a load.Winners)."""
    kernels, in_turn = [], set()
    for name, kernel in KERNELS.items():
        entries = sorted((e for p, e in winners.by_problem.items() if p.kernel == name and winners.choice(p).config),
                         key=lambda e: e.path.stem)  # where a kernel won (a baseline elsewhere: BLAS)
        kernels.append({
            "name": name, "arguments": kernel.arguments, "summed": SUMMED[name],
            "winners": [{"name": f"{name.upper()}_{e.record.problem.M}x{e.record.problem.N}x{e.record.problem.K}",
                         "stem": e.path.stem, "M": e.record.problem.M, "N": e.record.problem.N, "K": e.record.problem.K,
                         "threads": e.record.config.threads, "label": e.record.config.label(),
                         "sha": e.record.source_sha256[:12]} for e in entries]})
        for e in entries:  # a backward with a half on a kernel runs its halves in turn; as (B*T, C, OC)
            p = e.record.problem
            if name == "backward_input":
                in_turn.add((p.M, p.N, p.K))
            elif name == "backward_weight":
                in_turn.add((p.K, p.N, p.M))
    return render.render_file("njit_dispatch.py.jinja", kernels=kernels, in_turn=sorted(in_turn),
                              fingerprint=machine.fingerprint()["id"])


_dispatch = build.build(dispatch_source(load.winners()), {}).module


# --- the entry points -----------------------------------------------------------------------

def matmul_forward(out, inp, weight, bias=None):
    """out[B,T,OC] = inp[B,T,C] @ weight[OC,C].T + bias[OC]. Inside @njit code: dispatched there."""
    load.matmul_forward(out, inp, weight, bias)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    """dinp += dout @ weight; dweight += dout^T @ inp; dbias += dout summed over B, T. Inside @njit code: dispatched there."""
    load.matmul_backward(dinp, dweight, dbias, dout, inp, weight)


def _check_types(function, spec, given):
    for (name, dims, written, optional), argument in zip(spec, given):
        if optional and _is_none(argument):
            continue
        rank = len(dims)
        if not (load.is_float32_c(argument, written) and argument.ndim == rank):
            what = "a writable" if written else "a"
            raise TypingError(f"{function}: {name} must be {what} C-contiguous float32 array ({', '.join(dims)}), "
                              f"got {argument}")


def _is_none(argument):
    return argument is None or isinstance(argument, (types.NoneType, types.Omitted))


_NOTHING = np.empty(0, np.float32)  # no bias: numba freezes a global array, read-only, as kernels read bias


@overload(matmul_forward)
def _matmul_forward(out, inp, weight, bias=None):
    _check_types("matmul_forward", load.FORWARD, (inp, weight, out, bias))
    if _is_none(bias):
        return lambda out, inp, weight, bias=None: _forward(out, inp, weight, _NOTHING)
    return lambda out, inp, weight, bias=None: _forward(out, inp, weight, bias)


@overload(matmul_backward)
def _matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    _check_types("matmul_backward", load.BACKWARD, (dout, inp, weight, dinp, dweight, dbias))
    if _is_none(dbias):
        return lambda dinp, dweight, dbias, dout, inp, weight: _backward(dinp, dweight, np.empty(0, np.float32),
                                                                          dout, inp, weight)
    return lambda dinp, dweight, dbias, dout, inp, weight: _backward(dinp, dweight, dbias, dout, inp, weight)


@njit
def _forward(out, inp, weight, bias):
    B, T, C = inp.shape
    OC = weight.shape[0]
    if weight.shape[1] != C:
        raise ValueError("matmul_forward: weight must be (OC, C) with C = inp.shape[2]")
    if out.shape[0] != B or out.shape[1] != T or out.shape[2] != OC:
        raise ValueError("matmul_forward: out must be (B, T, OC): B, T of inp, OC = weight.shape[0]")
    if bias.shape[0] != 0 and bias.shape[0] != OC:
        raise ValueError("matmul_forward: bias must be (OC,) with OC = weight.shape[0]")
    if overlaps(out, inp) or overlaps(out, weight) or overlaps(out, bias):
        raise ValueError("matmul_forward: out overlaps an input in memory")
    M = B * T
    if M == 0 or OC == 0:
        return
    if C == 0:  # nothing is summed: the bias alone
        out[...] = 0.0
        if bias.shape[0]:
            _add_rows(out.reshape(M, OC), bias)
        return
    _dispatch.forward(out.reshape(M, OC), inp.reshape(M, C), weight, bias)


@njit
def _backward(dinp, dweight, dbias, dout, inp, weight):
    B, T, OC = dout.shape
    C = inp.shape[2]
    if inp.shape[0] != B or inp.shape[1] != T:
        raise ValueError("matmul_backward: inp must be (B, T, C) with B, T of dout")
    if weight.shape[0] != OC or weight.shape[1] != C:
        raise ValueError("matmul_backward: weight must be (OC, C): OC of dout, C of inp")
    if dinp.shape[0] != B or dinp.shape[1] != T or dinp.shape[2] != C:
        raise ValueError("matmul_backward: dinp must be (B, T, C), the shape of inp")
    if dweight.shape[0] != OC or dweight.shape[1] != C:
        raise ValueError("matmul_backward: dweight must be (OC, C), the shape of weight")
    if dbias.shape[0] != 0 and dbias.shape[0] != OC:
        raise ValueError("matmul_backward: dbias must be (OC,) with OC of dout")
    for output in (dinp.ravel(), dweight.ravel(), dbias):
        for source in (dout.ravel(), inp.ravel(), weight.ravel()):
            if overlaps(output, source):
                raise ValueError("matmul_backward: an output overlaps an input in memory")
    if overlaps(dinp.ravel(), dweight.ravel()) or overlaps(dinp.ravel(), dbias) or overlaps(dweight.ravel(), dbias):
        raise ValueError("matmul_backward: two outputs overlap in memory")
    M = B * T
    if M == 0 or C == 0 or OC == 0:  # nothing is summed, or nothing receives the sum
        if dbias.shape[0] and M:
            dbias += dout.reshape(M, OC).sum(axis=0)
        return
    _dispatch.backward(dinp.reshape(M, C), dweight, dbias, dout.reshape(M, OC), inp.reshape(M, C), weight)
