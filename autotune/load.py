"""The import API: validate the arrays, then run this machine's winner for the shape.

    import tuned
    tuned.matmul_forward(out, inp, weight, bias)                    # out = inp @ weight.T + bias
    tuned.matmul_backward(dinp, dweight, dbias, dout, inp, weight)  # accumulates, as llm.c does

A shape nobody tuned runs space.default_config() (never an error). Records from another
machine, numba version or template version are skipped with one warning per directory.
"""
import os
import warnings

import numba
import numpy as np

from autotune import build, machine, render, space, store
from autotune.ops import KERNELS, Problem

_FLOAT32 = np.dtype(np.float32)


class Winners:
    """The usable records of one tuned/ directory and the kernels built from them."""

    def __init__(self, directory):
        self.directory = directory
        self.by_problem = {}
        skipped = []
        for entry in store.entries(directory):
            if entry.status == "ok":
                self.by_problem[entry.problem] = entry
            else:
                skipped.append(f"{entry.path.name} ({entry.status}: {entry.reason})")
        if skipped:
            warnings.warn(f"autotune: not using {len(skipped)} record(s) in {directory}: " + "; ".join(skipped),
                          stacklevel=4)
        self.functions = {}

    def function(self, problem):
        """(callable, numba thread count) for `problem`; the count is None where it does not matter
        (a serial kernel or BLAS), so the call path skips setting it."""
        if problem not in self.functions:
            entry = self.by_problem.get(problem)
            kernel = KERNELS[problem.kernel]
            if entry:
                config = space.Config.from_dict(entry.record["config"])
                source, flags = entry.source, entry.record["compile_flags"]
            else:
                config = space.default_config()
                source, flags = render.render(kernel, config), render.COMPILE_FLAGS
            threads = min(config.threads, machine.max_threads())
            if entry and entry.record.get("use") == "blas":  # numpy/BLAS won the final comparison
                self.functions[problem] = (kernel.blas, None)
            else:
                module = build.build(source, flags).module
                self.functions[problem] = (getattr(module, kernel.entry), threads if threads > 1 else None)
        return self.functions[problem]


_winners = {}


def winners():
    """The Winners of the folder AUTOTUNE_TUNED_DIR names now (read once per folder)."""
    key = os.environ.get("AUTOTUNE_TUNED_DIR")  # a dict lookup: this runs on every call
    if key not in _winners:
        _winners[key] = Winners(store.tuned_dir().resolve())
    return _winners[key]


# (AUTOTUNE_TUNED_DIR, kernel, M, N, K) -> Winners.function(...): the per-call path is one dict
# lookup, since at small sizes Python overhead is as large as the kernel.
_dispatch = {}


def _run(kernel, dims, *arrays):
    key = (os.environ.get("AUTOTUNE_TUNED_DIR"), kernel, *dims)
    target = _dispatch.get(key)
    if target is None:
        target = _dispatch[key] = winners().function(Problem(kernel, *dims))
    fn, threads = target
    if threads is not None and numba.get_num_threads() != threads:
        numba.set_num_threads(threads)
    fn(*arrays)


def matmul_forward(out, inp, weight, bias=None):
    """out[B,T,OC] = inp[B,T,C] @ weight[OC,C].T + bias[OC]; float32, C-contiguous; bias may be None."""
    B, T, C = _check("inp", inp, ndim=3)
    OC, _ = _check("weight", weight, (None, C), names="(OC, C)")
    _check("out", out, (B, T, OC), names="(B, T, OC)", writable=True)
    if bias is not None:
        _check("bias", bias, (OC,), names="(OC,)")
    _no_overlap([("out", out)], [("inp", inp), ("weight", weight), ("bias", bias)])
    if 0 in (B, T, C, OC):
        out[...] = 0.0 if bias is None else bias
        return
    M = B * T
    bias = np.zeros(OC, np.float32) if bias is None else bias
    _run("forward", (M, OC, C), out.reshape(M, OC), inp.reshape(M, C), weight, bias)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    """dinp += dout @ weight; dweight += dout^T @ inp (over B and T); dbias += dout summed over B, T.

    dout is (B,T,OC), inp and dinp (B,T,C), weight and dweight (OC,C), dbias (OC,) or None.
    """
    B, T, OC = _check("dout", dout, ndim=3)
    _, _, C = _check("inp", inp, (B, T, None), names="(B, T, C)")
    _check("weight", weight, (OC, C), names="(OC, C)")
    _check("dinp", dinp, (B, T, C), names="(B, T, C)", writable=True)
    _check("dweight", dweight, (OC, C), names="(OC, C)", writable=True)
    if dbias is not None:
        _check("dbias", dbias, (OC,), names="(OC,)", writable=True)
    _no_overlap([("dinp", dinp), ("dweight", dweight), ("dbias", dbias)],
                [("dout", dout), ("inp", inp), ("weight", weight)])
    M = B * T
    if 0 in (M, C, OC):  # nothing is summed, or nothing receives the sum; numpy gets it right
        if dbias is not None:
            dbias += dout.reshape(M, OC).sum(axis=0)
        return
    dout2, inp2 = dout.reshape(M, OC), inp.reshape(M, C)
    _run("backward_input", (M, C, OC), dinp.reshape(M, C), dout2, weight)
    no_dbias = np.empty(0, np.float32)
    _run("backward_weight", (OC, C, M), dweight, no_dbias if dbias is None else dbias, dout2, inp2)


def _check(name, array, shape=None, ndim=None, names=None, writable=False):
    """Validate one argument before any kernel (compiled without bounds checks) sees it; its shape.
    A valid argument passes one cheap test (at small sizes validation costs as much as the
    kernel); only an invalid one pays for finding which rule it breaks."""
    if (type(array) is np.ndarray and array.dtype == _FLOAT32 and _fits(array.shape, shape, ndim)
            and array.flags.c_contiguous and (array.flags.writeable or not writable)):
        return array.shape
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of float32, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {array.dtype}")
    ndim = ndim or len(shape)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {names or ''}, got shape {array.shape}")
    if not _fits(array.shape, shape, ndim):
        expected = tuple("?" if want is None else want for want in shape)
        raise ValueError(f"{name} has shape {array.shape}, expected {names} = {expected}".replace("'", ""))
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray makes a copy that is)")
    if writable and not array.flags.writeable:
        raise ValueError(f"{name} is read-only, but it receives the result")
    return array.shape


def _fits(got, shape, ndim):
    """Whether shape `got` matches `shape` (None: any length there), or has `ndim` dimensions."""
    if shape is None:
        return len(got) == ndim
    return got == shape or (len(got) == len(shape) and all(w is None or w == g for w, g in zip(shape, got)))


def _no_overlap(outputs, inputs):
    """No output may share memory with an input or another output: the kernel would read what it wrote."""
    for i, (name, array) in enumerate(outputs):
        for other_name, other in outputs[i + 1:] + inputs:
            if other is not None and np.may_share_memory(array, other):
                raise ValueError(f"{name} overlaps {other_name} in memory: the result would overwrite its input")
