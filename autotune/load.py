"""The import API: validate the arrays, then run this machine's choice for the size.

    import tuned
    tuned.matmul_forward(out, inp, weight, bias)                    # out = inp @ weight.T + bias
    tuned.matmul_backward(dinp, dweight, dbias, dout, inp, weight)  # accumulates, as llm.c does

Per kernel and size (M, N, K): a size tuned on this machine runs its winner (or the fallback that
beat it: BLAS with beta, called from compiled code (autotune.blas), numpy on 2-D views, or PyTorch
where it was installed at the search, and is now; else BLAS); a size nobody tuned runs the nearest
tuned size's choice, moved to valid values for this size, or BLAS with beta when nothing near was
tuned (over the sweep's grid the analytical model's config ran a median 0.72x (forward) and 0.47x
(backward) of the best other there, BLAS with beta 0.84x and 0.81x). Records of a kin machine (the same
CPU, target and numba, other feature flags: see store) count as tuned where this machine has none
of its own for the size. Records from another machine, target or numba version are skipped:
silently beside this machine's own (tuned/ holds several machine kinds side by side), with one
warning when none is this machine's. Stale (the
templates changed) or corrupt records are skipped with one warning per directory.
"""
import os
import warnings
from dataclasses import dataclass

import numba
import numpy as np
from numba import types
from numba.extending import overload

from autotune import blas as compiled_blas
from autotune import build, machine, ops, space, store
from autotune.ops import KERNELS, Problem

NEAR = 1.5  # a tuned size this close (sum of |log ratio| of M, N, K) speaks for an untuned one
FAR = "nothing tuned near"  # the origin of BLAS with beta at such a size
KIN = "tuned on kin"  # the origin of a kin record's choice (see store), followed by its fingerprint


@dataclass(frozen=True)
class Choice:
    """What runs for one problem: a config, or the baseline that beat the kernels ("blas", "numpy");
    where that came from; and a stored winner's exact source (else it is rendered from the config)."""
    config: space.Config | None
    origin: str  # "tuned", KIN + " <fingerprint>", "nearest tuned <problem>" or FAR
    source: str | None = None
    compile_flags: dict | None = None
    baseline: str | None = None
    beside: bool = False  # the baseline runs because the other kernel of the backward runs it (beside)

    @property
    def kind(self):
        """"tuned", "kin", "near" or "far": how much of this choice was measured at this size, here."""
        if self.origin == "tuned":
            return "tuned"
        if self.origin == FAR:
            return "far"
        return "kin" if self.origin.startswith(KIN) else "near"


class Winners:
    """The usable records of one tuned/ directory and the kernels built from them."""

    def __init__(self, directory):
        self.directory = directory
        own, kin, damaged, foreign = {}, {}, [], set()
        for entry in store.entries(directory):
            if entry.status == "ok":
                own[entry.record.problem] = entry
            elif entry.status == "kin":
                newest = kin.get(entry.record.problem)
                if newest is None or entry.record.date > newest.record.date:
                    kin[entry.record.problem] = entry
            elif entry.status == "foreign":
                foreign.add(entry.record.fingerprint.get("id", "?"))
            else:
                damaged.append(f"{entry.path.name} ({entry.status}: {entry.reason})")
        self.by_problem = {**kin, **own}  # this machine's own record of a size first
        on_torch = [e for e in self.by_problem.values() if e.record.use == "torch"]
        if on_torch and ops.runnable("torch") != "torch":
            warnings.warn(f"autotune: {len(on_torch)} record(s) in {directory} run PyTorch, which is not installed: "
                          "BLAS with beta runs there (pip install 'llmc-autotune[torch]')", stacklevel=4)
        if damaged:
            warnings.warn(f"autotune: not using {len(damaged)} record(s) in {directory}: " + "; ".join(damaged),
                          stacklevel=4)
        if (foreign or kin) and not own:  # beside this machine's own records, other kinds' are expected
            kin_ids = sorted({e.record.fingerprint.get("id", "?") for e in kin.values()})
            runs = (f"{len(kin)} records of {', '.join(kin_ids)} (this CPU and target, other feature flags) run"
                    if kin else "BLAS with beta = 1 runs")
            warnings.warn(f"autotune: no record in {directory} was made on this machine (fingerprint "
                          f"{machine.fingerprint()['id']}; records there come from "
                          f"{', '.join(sorted(foreign | set(kin_ids)))}): {runs} until you search here "
                          "(python -m autotune search)", stacklevel=4)
        self.functions = {}

    def choice(self, problem):
        """The Choice for `problem`, agreed with the other kernel of its backward (see beside)."""
        own = self._own_choice(problem)
        sibling = _sibling(problem)
        return own if sibling is None else beside(own, self._own_choice(sibling), problem.flops)

    def _own_choice(self, problem):
        entry = self.by_problem.get(problem)
        if entry is not None:
            record = entry.record
            origin = "tuned" if entry.status == "ok" else f"{KIN} {record.fingerprint.get('id', '?')}"
            if record.use != "kernel":
                return Choice(None, origin, baseline=ops.runnable(record.use))
            return Choice(record.config, origin, entry.source, record.compile_flags)
        tuned = [r.record for r in self.by_problem.values() if r.record.problem.kernel == problem.kernel]
        near = min(tuned, key=lambda r: r.problem.distance(problem), default=None)
        if near is not None and near.problem.distance(problem) <= NEAR:
            origin = f"nearest tuned {near.problem}"
            if near.use != "kernel":
                return Choice(None, origin, baseline=ops.runnable(near.use))
            config = space.nearest_choice(near.config, problem)
            if space.invalid_reason(config, problem) is None:
                return Choice(config, origin)
        return Choice(None, FAR, baseline="blas")

    def function(self, problem):
        """(callable, numba thread count) for `problem`; the count is None where it does not matter
        (a serial kernel, BLAS on OpenBLAS's own threads, numpy, PyTorch), so the call path skips
        setting it."""
        if problem not in self.functions:
            kernel, choice = KERNELS[problem.kernel], self.choice(problem)
            if choice.config is None:
                self.functions[problem] = (kernel.baseline(choice.baseline), _numba_threads_for(choice.baseline, problem))
            else:
                built = (build.build(choice.source, choice.compile_flags) if choice.source
                         else build.build_kernel(kernel, choice.config))
                threads = choice.config.threads
                self.functions[problem] = (built.function(kernel), threads if threads > 1 else None)
        return self.functions[problem]

    def backward_function(self, M, C, OC):
        """(callable, numba thread count) for the whole backward at B*T = M, on 2-D views, arguments
        (dinp, dweight, dbias, dout, inp, weight): the compiled BLAS's backward where both halves
        run it (which may run them side by side, see autotune.blas.backward), else each half's
        function in turn."""
        halves = (Problem("backward_input", M, C, OC), Problem("backward_weight", OC, C, M))
        if all(self.choice(half).baseline == "blas" for half in halves):
            return compiled_blas.backward, _numba_threads_for("blas", halves[0])
        (input_fn, input_threads), (weight_fn, weight_threads) = (self.function(half) for half in halves)

        def in_turn(dinp, dweight, dbias, dout, inp, weight):
            _call(input_fn, input_threads, dinp, dout, weight)
            _call(weight_fn, weight_threads, dweight, dbias, dout, inp)
        return in_turn, None


def _numba_threads_for(baseline, problem):
    """numba's thread count for a "blas" baseline that runs on numba's threads (compiled_blas): every
    core, as the search timed it. Left to whatever ran last, it ran at the count of the last kernel
    or numba.set_num_threads call: on 1 thread it took 1.9x as long at 4,64,192,192 (Zen 3, a one-off check)."""
    if baseline != "blas" or compiled_blas.on_own_threads(problem.flops) or machine.max_threads() == 1:
        return None
    return machine.max_threads()


def _sibling(problem):
    """The other kernel of the same backward (llm.c's sizes: backward_input is (B*T, C, OC),
    backward_weight (OC, C, B*T)), or None for the forward."""
    if problem.kernel == "backward_input":
        return Problem("backward_weight", problem.K, problem.N, problem.M)
    if problem.kernel == "backward_weight":
        return Problem("backward_input", problem.K, problem.N, problem.M)
    return None


def beside(own, other, flops):
    """A BLAS call on OpenBLAS's own threads leaves them spinning for a while, and a parallel kernel
    started then fights them for the two cores: at 4,64,48,48 a backward whose input half ran BLAS
    and whose weight half ran a 2-thread kernel took 9 ms a call, against 0.08 ms for both halves in
    BLAS and 0.11 ms with a 1-thread kernel (interleaved, 7 rounds). So beside a formulation that
    runs there (numpy; the compiled BLAS below its SERIAL_FLOPS, see autotune.blas), a parallel
    kernel gives way to that formulation too. `flops`: the backward's, the same for both halves."""
    if other.baseline is None or own.baseline is not None or own.config.threads == 1:
        return own
    if other.baseline == "blas" and not compiled_blas.on_own_threads(flops):
        return own  # that BLAS call runs on numba's threads, as the kernel does
    return Choice(None, own.origin, baseline=other.baseline, beside=True)


_winners = {}


def winners():
    """The Winners of the folder AUTOTUNE_TUNED_DIR names now (read once per folder)."""
    key = os.environ.get("AUTOTUNE_TUNED_DIR")  # a dict lookup: this runs on every call
    if key not in _winners:
        _winners[key] = Winners(store.tuned_dir().resolve())
    return _winners[key]


# (AUTOTUNE_TUNED_DIR, kernel, M, N, K) -> Winners.function(...) (for "backward", (M, C, OC) ->
# Winners.backward_function(...)): the per-call path is one dict lookup, since at small sizes Python
# overhead is as large as the kernel.
_dispatch = {}


def _run(kernel, dims, *arrays):
    """Run what this machine chose for `kernel` ("backward": the whole backward) at `dims`."""
    key = (_environ.get(_TUNED_DIR_KEY), kernel, *dims)
    target = _dispatch.get(key)
    if target is None:
        found = winners()
        target = _dispatch[key] = (found.backward_function(*dims) if kernel == "backward"
                                   else found.function(Problem(kernel, *dims)))
    fn, threads = target
    if threads is not None and _numba_threads() != threads:  # _call's body: its call would cost 0.2 us here
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    fn(*arrays)


def _call(fn, threads, *arrays):
    """fn(*arrays) on `threads` of numba's threads (None: whatever the count is)."""
    if threads is not None and _numba_threads() != threads:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    fn(*arrays)


@numba.njit
def _numba_threads():
    """numba.get_num_threads(), compiled: Python's first makes sure the thread pool was launched,
    and _run with a no-op kernel took 1.5 us a call with it, 0.6 with this (Zen 4; `python
    docs/entry_cost.py` times it). Not cached: numba cannot cache a function that holds a ctypes
    pointer, as this one does; compiling it takes 0.1 s, on the first call."""
    return numba.get_num_threads()


# AUTOTUNE_TUNED_DIR as the raw value CPython keeps behind os.environ (which os.environ[...] = ...
# and monkeypatch.setenv update): os.environ.get costs 2 us a call when the variable is unset (it
# raises and catches KeyError), this 0.1. The value only keys _dispatch; winners() decodes it.
_environ = os.environ._data
_TUNED_DIR_KEY = os.environ.encodekey("AUTOTUNE_TUNED_DIR")

_NO_ARRAY = np.empty(0, np.float32)
_NO_ARRAY.flags.writeable = False  # a kernel must not write it: it stands for "no bias"
_NO_SUMS = np.empty(0, np.float32)  # stands for "no dbias"; empty, so nothing is written


def matmul_forward(out, inp, weight, bias=None):
    """out[B,T,OC] = inp[B,T,C] @ weight[OC,C].T + bias[OC]; float32, C-contiguous; bias may be None."""
    has_bias = bias is not None
    M, N, K = _checked(_forward_dims, out, inp, weight, bias if has_bias else _NO_ARRAY, has_bias)
    if M < 0:
        _refuse(FORWARD, {"inp": inp, "weight": weight, "out": out, "bias": bias})
    if 0 in (M, N, K):
        out[...] = bias if has_bias else 0.0
        return
    _run("forward", (M, N, K), out.reshape(M, N), inp.reshape(M, K), weight, bias if has_bias else _NO_ARRAY)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    """dinp += dout @ weight; dweight += dout^T @ inp (over B and T); dbias += dout summed over B, T.

    dout is (B,T,OC), inp and dinp (B,T,C), weight and dweight (OC,C), dbias (OC,) or None.
    """
    has_dbias = dbias is not None
    M, C, OC = _checked(_backward_dims, dinp, dweight, dbias if has_dbias else _NO_SUMS, dout, inp, weight, has_dbias)
    if M < 0:
        _refuse(BACKWARD, {"dout": dout, "inp": inp, "weight": weight, "dinp": dinp, "dweight": dweight,
                           "dbias": dbias})
    if 0 in (M, C, OC):  # nothing is summed, or nothing receives the sum; numpy gets it right
        if has_dbias:
            dbias += dout.reshape(M, OC).sum(axis=0)
        return
    _run("backward", (M, C, OC), dinp.reshape(M, C), dweight, dbias if has_dbias else _NO_SUMS, dout.reshape(M, OC),
         inp.reshape(M, C), weight)


# What each entry point takes: (argument, its dimensions by name, written?, may be None?), in the
# order that fixes the dimensions (the first argument with a dimension defines it).
FORWARD = (("inp", ("B", "T", "C"), False, False), ("weight", ("OC", "C"), False, False),
           ("out", ("B", "T", "OC"), True, False), ("bias", ("OC",), False, True))
BACKWARD = (("dout", ("B", "T", "OC"), False, False), ("inp", ("B", "T", "C"), False, False),
            ("weight", ("OC", "C"), False, False), ("dinp", ("B", "T", "C"), True, False),
            ("dweight", ("OC", "C"), True, False), ("dbias", ("OC",), True, True))


# --- validation: one compiled call on the way in, an explanation on the way out ------------------
# At 4,64,48,48 the Python checks of every argument's type, flags and shape plus the overlap check
# cost 9 us, a third of the BLAS call behind them; the compiled check below costs about 1.

def _checked(check, *arguments):
    """check(*arguments): the (M, N, K) of valid arrays, or (-1, -1, -1) for arrays it refused or
    numba could not type (a list, an object array, an array of the wrong rank)."""
    try:
        return check(*arguments)
    except (TypeError, ValueError, NotImplementedError, numba.core.errors.NumbaError):
        return -1, -1, -1


@numba.njit(cache=True)
def _forward_dims(out, inp, weight, bias, has_bias):
    """(B*T, OC, C) if out is (B, T, OC), inp (B, T, C), weight (OC, C) and bias (OC,) (or no bias),
    all float32 C-contiguous, out writable and overlapping none of them; else (-1, -1, -1)."""
    if not (_writable(out) and _readable(inp) and _readable(weight) and _readable(bias)):
        return -1, -1, -1
    B, T, C = inp.shape
    OC = weight.shape[0]
    fits = weight.shape[1] == C and out.shape == (B, T, OC) and (bias.shape[0] == OC or not has_bias)
    if not fits or _first_meeting(1, (byte_span(out), byte_span(inp), byte_span(weight), byte_span(bias)))[0] >= 0:
        return -1, -1, -1
    return B * T, OC, C


@numba.njit(cache=True)
def _backward_dims(dinp, dweight, dbias, dout, inp, weight, has_dbias):
    """(B*T, C, OC) if dout is (B, T, OC), inp and dinp (B, T, C), weight and dweight (OC, C) and
    dbias (OC,) (or no dbias), all float32 C-contiguous, the outputs writable and overlapping no
    other argument; else (-1, -1, -1)."""
    if not (_writable(dinp) and _writable(dweight) and _writable(dbias) and _readable(dout) and _readable(inp)
            and _readable(weight)):
        return -1, -1, -1
    B, T, OC = dout.shape
    C = inp.shape[2]
    fits = (inp.shape == (B, T, C) and dinp.shape == (B, T, C) and weight.shape == (OC, C)
            and dweight.shape == (OC, C) and (dbias.shape[0] == OC or not has_dbias))
    spans = (byte_span(dinp), byte_span(dweight), byte_span(dbias), byte_span(dout), byte_span(inp), byte_span(weight))
    if not fits or _first_meeting(3, spans)[0] >= 0:
        return -1, -1, -1
    return B * T, C, OC


def _readable(array):
    """Whether `array` is a float32 C-contiguous array: numba answers when it compiles (below)."""
    raise NotImplementedError("called in compiled code only")


def _writable(array):
    """Whether `array` is a writable float32 C-contiguous array: numba answers when it compiles."""
    raise NotImplementedError("called in compiled code only")


@overload(_readable)
def _readable_type(array):
    fits = is_float32_c(array, written=False)
    return lambda array: fits


@overload(_writable)
def _writable_type(array):
    fits = is_float32_c(array, written=True)
    return lambda array: fits


def is_float32_c(numba_type, written):
    """Whether arguments of this numba type are float32 C-contiguous arrays (writable, if `written`)."""
    return (isinstance(numba_type, types.Array) and numba_type.dtype == types.float32 and numba_type.layout == "C"
            and (numba_type.mutable or not written))


def _refuse(spec, arrays):
    """Raise the error that says what is wrong with the arguments the compiled check refused."""
    _explain(spec, arrays)
    names = [name for name, _, written, _ in sorted(spec, key=lambda argument: not argument[2])]  # outputs first
    present = [_NO_SUMS if arrays[name] is None else arrays[name] for name in names]
    _no_overlap(names, sum(written for _, _, written, _ in spec), *present)
    raise AssertionError("the compiled check refused arguments _explain and _no_overlap accept")  # a bug here


def _explain(spec, arrays):
    """Raise the error that names the first argument breaking a rule, with the shape expected of it:
    each dimension as most arguments have it (the earliest one on a tie)."""
    sizes = _agreed_sizes(spec, arrays)
    for name, dims, written, optional in spec:
        array = arrays[name]
        if array is None and optional:
            continue
        want = tuple(sizes.get(d, "?") for d in dims)
        expected = f"({', '.join(dims)}{',' if len(dims) == 1 else ''}) = {str(want).replace(chr(39), '')}"
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array of float32 {expected}, got {type(array).__name__}")
        if array.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {array.dtype} (use {name}.astype(np.float32))")
        if array.ndim != len(dims):
            raise ValueError(f"{name} must have {len(dims)} dimensions {expected}, got shape {array.shape}")
        if array.shape != want:
            raise ValueError(f"{name} has shape {array.shape}, expected {expected}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray({name}) makes a copy that is)")
        if written and not array.flags.writeable:
            raise ValueError(f"{name} is read-only, but it receives the result")


def _agreed_sizes(spec, arrays):
    """{dimension: the size most arguments with that dimension give it}; a tie goes to the earliest."""
    seen = {}
    for name, dims, _, _ in spec:
        array = arrays[name]
        if isinstance(array, np.ndarray) and array.ndim == len(dims):
            for dim, size in zip(dims, array.shape):
                seen.setdefault(dim, []).append(size)
    return {dim: max(sizes, key=lambda size: (sizes.count(size), -sizes.index(size))) for dim, sizes in seen.items()}


def _no_overlap(names, outputs, *arrays):
    """No output (the first `outputs` arrays, C-contiguous) may share memory with another array: the
    kernel would read what it wrote."""
    i, j = _first_meeting(outputs, tuple(byte_span(array) for array in arrays))
    if i >= 0:
        raise ValueError(f"{names[i]} overlaps {names[j]} in memory: the result would overwrite its input")


@numba.njit(cache=True)
def _first_meeting(outputs, spans):
    """(i, j), j > i, of the first output span spans[i] that meets spans[j], or (-1, -1); spans are
    byte_span()s, the outputs' first."""
    for i in range(outputs):
        for j in range(i + 1, len(spans)):
            if spans[i][0] < spans[j][1] and spans[j][0] < spans[i][1]:
                return i, j
    return -1, -1


@numba.njit(cache=True)
def overlaps(a, b):
    """Whether two C-contiguous arrays share memory, in compiled code."""
    a_start, a_end = byte_span(a)
    b_start, b_end = byte_span(b)
    return a_start < b_end and b_start < a_end


@numba.njit(cache=True)
def byte_span(array):
    """[first byte, past the last byte) of a C-contiguous array."""
    start = array.ctypes.data
    return start, start + array.size * array.itemsize

