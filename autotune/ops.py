"""The llm.c matmuls as tunable kernels: shapes, the kernel contract, references and baselines.

Each kernel is a GEMM written in its own terms: the output is M x N and K is the summed axis.

    forward          out[M, N]      = inp[M, K] @ weight[N, K].T + bias[N]     M=B*T  N=OC  K=C
    backward_input   dinp[M, N]    += dout[M, K] @ weight[K, N]                M=B*T  N=C   K=OC
    backward_weight  dweight[M, N] += dout[K, M].T @ inp[K, N]                 M=OC   N=C   K=B*T
                     dbias[M]      += dout[K, M] summed over K

llm.c's matmul_backward is backward_input followed by backward_weight. The forward's bias and the
backward's dbias may be empty arrays (length 0): no bias, no dbias.
"""
import abc
import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg.blas
from numba import njit, prange

from autotune import blas as compiled_blas
from autotune import machine


@dataclass(frozen=True)
class Shape:
    """An llm.c matmul: inp is (B,T,C), weight is (OC,C), out is (B,T,OC)."""
    B: int
    T: int
    C: int
    OC: int

    @classmethod
    def parse(cls, text):
        """Shape.parse("64,1024,768,768") -> Shape(B=64, T=1024, C=768, OC=768); str(shape),
        "B=64,T=1024,C=768,OC=768", parses back."""
        parts = text.split(",")
        try:
            values = [int(part.removeprefix(f"{name}=")) for part, name in zip(parts, ("B", "T", "C", "OC"))]
        except ValueError:
            values = []
        if len(parts) != 4 or len(values) != 4 or min(values) < 1:
            raise ValueError(f"a shape is four positive integers B,T,C,OC (e.g. 64,1024,768,768), got {text!r}")
        return cls(*values)

    def __str__(self):
        return f"B={self.B},T={self.T},C={self.C},OC={self.OC}"


@dataclass(frozen=True)
class Problem:
    """One kernel at one size: the unit that is searched, stored and dispatched on."""
    kernel: str
    M: int
    N: int
    K: int

    @property
    def flops(self):
        return 2 * self.M * self.N * self.K

    def distance(self, other):
        """How far apart two problems' sizes are: the sum of |log ratio| of M, N and K."""
        return sum(abs(math.log(a / b)) for a, b in ((self.M, other.M), (self.N, other.N), (self.K, other.K)))

    def __str__(self):
        return f"{self.kernel} M={self.M} N={self.N} K={self.K}"


class Kernel(abc.ABC):
    """One kernel family: its template, its arrays, its float64 reference and its baselines.

    One calling convention for everything that does the kernel's job, generated or not: the
    arguments named in `arguments`, in that order (outputs first), as 2-D float32 C-contiguous
    arrays (1-D for bias and dbias). `call(fn, arrays)` calls any of them on a dict of arrays.
    Baselines (`BASELINES`) are static methods with those arguments.
    """
    name: str
    template: str  # file in templates/
    entry: str  # function the template defines
    arguments: tuple  # parameter names of every implementation, in order
    outputs: tuple  # the arguments it writes

    def problem(self, shape):
        return Problem(self.name, *self.dims(shape))

    def call(self, fn, arrays):
        fn(*(arrays[name] for name in self.arguments))

    def inputs(self, problem, seed=0):
        """Random N(0,1) float32 arrays (outputs included: the backward kernels accumulate into them)."""
        rng = np.random.default_rng(seed)
        return {name: rng.standard_normal(dims, dtype=np.float32)
                for name, dims in self.array_shapes(problem).items()}

    def baseline(self, name):
        """The baseline called `name` (one of BASELINES) as a function of the kernel's arguments."""
        return getattr(self, name)

    @abc.abstractmethod
    def dims(self, shape):
        """(M, N, K) of this kernel for an llm.c shape."""

    @abc.abstractmethod
    def array_shapes(self, problem):
        """{argument: shape} at a problem size."""

    @abc.abstractmethod
    def reference(self, arrays):
        """{output: (expected float64 result, the root of the sum of its squared terms)} from the arrays
        before a call; the second sizes the rounding error a float32 sum may make."""


# What every kernel is measured against, each a static method of the kernel with its arguments:
#   numpy   numpy on 2-D arrays, as a careful user writes it (bias add / accumulation included)
#   blas    BLAS alone, no temporaries: sgemm with beta = 1 into the output, dbias summed in a loop,
#           called from compiled code (autotune.blas): what the loaders run where BLAS won or
#           nothing was tuned near, so what the search's kernels must beat
#   scipy_blas  the same through scipy's Python wrapper, sgemv for dbias: what a user writes
#           (bench's "BLAS beta"); at 4,64,48,48 the wrapper makes it 1.2-1.3x slower than blas
#   torch   PyTorch's addmm / addmm_ on tensors sharing the arrays' memory (MKL on its x86 wheels),
#           where the optional extra is installed
#   sgemm   the bare product into the output (no bias, no accumulation): a yardstick, not the job
#   naive   the seed article's loops in numba (one thread per row, dot over K)
BASELINES = ("numpy", "blas", "scipy_blas", "torch", "sgemm", "naive")
# What the loaders may run where no kernel won (a record's `use`): BLAS with beta, unless another
# of these ran faster beyond the noise in the search's final comparison (search._fallback).
FALLBACKS = ("blas", "numpy", "torch")


@functools.cache
def torch_or_none():
    """PyTorch on numba's thread count, or None where the optional extra is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(machine.max_threads())
    return torch


def fallbacks():
    """The FALLBACKS this process can run: PyTorch only where it is installed."""
    return tuple(name for name in FALLBACKS if name != "torch" or torch_or_none() is not None)


def runnable(use):
    """What runs for a record's `use` here: a record made where PyTorch was installed runs BLAS with
    beta where it is not."""
    return "blas" if use == "torch" and torch_or_none() is None else use


def _tensors(*arrays):
    """Tensors sharing the arrays' memory. torch warns that a read-only array makes a writable
    tensor; the inputs are only read, so the warning is silenced (only where one is read-only: the
    check costs microseconds at the small shapes)."""
    torch = torch_or_none()
    if torch is None:
        raise RuntimeError("PyTorch is not installed: pip install 'llmc-autotune[torch]'")
    if all(a.flags.writeable for a in arrays):
        return [torch.from_numpy(a) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [torch.from_numpy(a) for a in arrays]


# BLAS through scipy works on Fortran-order views of our C-order arrays, without a copy:
# C = A @ B in C order is C.T = B.T @ A.T in Fortran order.


class Forward(Kernel):
    name, template, entry = "forward", "forward.py.jinja", "matmul_forward"
    arguments, outputs = ("out", "inp", "weight", "bias"), ("out",)

    def dims(self, s):
        return s.B * s.T, s.OC, s.C

    def array_shapes(self, p):
        return {"out": (p.M, p.N), "inp": (p.M, p.K), "weight": (p.N, p.K), "bias": (p.N,)}

    def reference(self, a):
        x, w, b = (a[n].astype(np.float64) for n in ("inp", "weight", "bias"))
        b = b if b.shape[0] else np.zeros(w.shape[0])
        return {"out": (x @ w.T + b, np.sqrt(x**2 @ (w**2).T + b**2))}

    @staticmethod
    def numpy(out, inp, weight, bias):
        np.matmul(inp, weight.T, out=out)
        if bias.shape[0]:
            out += bias

    blas = staticmethod(compiled_blas.forward)

    @staticmethod
    def scipy_blas(out, inp, weight, bias):
        if bias.shape[0]:
            out[:] = bias
        scipy.linalg.blas.sgemm(1.0, weight.T, inp.T, beta=1.0 if bias.shape[0] else 0.0, c=out.T, trans_a=1,
                         overwrite_c=1)

    @staticmethod
    def torch(out, inp, weight, bias):
        out_t, inp_t, weight_t, bias_t = _tensors(out, inp, weight, bias)
        if bias.shape[0]:
            torch_or_none().addmm(bias_t, inp_t, weight_t.t(), out=out_t)
        else:
            torch_or_none().mm(inp_t, weight_t.t(), out=out_t)

    @staticmethod
    def sgemm(out, inp, weight, bias):
        np.matmul(inp, weight.T, out=out)

    @staticmethod
    def naive(out, inp, weight, bias):
        naive_forward(out, inp, weight, bias)


class BackwardInput(Kernel):
    name, template, entry = "backward_input", "backward_input.py.jinja", "matmul_backward_input"
    arguments, outputs = ("dinp", "dout", "weight"), ("dinp",)

    def dims(self, s):
        return s.B * s.T, s.C, s.OC

    def array_shapes(self, p):
        return {"dinp": (p.M, p.N), "dout": (p.M, p.K), "weight": (p.K, p.N)}

    def reference(self, a):
        d, w, g = (a[n].astype(np.float64) for n in ("dout", "weight", "dinp"))
        return {"dinp": (g + d @ w, np.sqrt(g**2 + d**2 @ w**2))}

    @staticmethod
    def numpy(dinp, dout, weight):
        dinp += dout @ weight

    blas = staticmethod(compiled_blas.backward_input)

    @staticmethod
    def scipy_blas(dinp, dout, weight):
        scipy.linalg.blas.sgemm(1.0, weight.T, dout.T, beta=1.0, c=dinp.T, overwrite_c=1)

    @staticmethod
    def torch(dinp, dout, weight):
        dinp_t, dout_t, weight_t = _tensors(dinp, dout, weight)
        dinp_t.addmm_(dout_t, weight_t)

    @staticmethod
    def sgemm(dinp, dout, weight):
        np.matmul(dout, weight, out=dinp)

    @staticmethod
    def naive(dinp, dout, weight):
        naive_backward_input(dinp, dout, weight)


class BackwardWeight(Kernel):
    name, template, entry = "backward_weight", "backward_weight.py.jinja", "matmul_backward_weight"
    arguments, outputs = ("dweight", "dbias", "dout", "inp"), ("dweight", "dbias")

    def dims(self, s):
        return s.OC, s.C, s.B * s.T

    def array_shapes(self, p):
        return {"dweight": (p.M, p.N), "dbias": (p.M,), "dout": (p.K, p.M), "inp": (p.K, p.N)}

    def reference(self, a):
        d, x, gw, gb = (a[n].astype(np.float64) for n in ("dout", "inp", "dweight", "dbias"))
        expected = {"dweight": (gw + d.T @ x, np.sqrt(gw**2 + (d**2).T @ x**2))}
        if gb.shape[0]:
            expected["dbias"] = (gb + d.sum(axis=0), np.sqrt(gb**2 + (d**2).sum(axis=0)))
        return expected

    @staticmethod
    def numpy(dweight, dbias, dout, inp):
        dweight += dout.T @ inp
        if dbias.shape[0]:
            dbias += dout.sum(axis=0)

    blas = staticmethod(compiled_blas.backward_weight)

    @staticmethod
    def scipy_blas(dweight, dbias, dout, inp):
        scipy.linalg.blas.sgemm(1.0, inp.T, dout.T, beta=1.0, c=dweight.T, trans_b=1, overwrite_c=1)
        if dbias.shape[0]:
            scipy.linalg.blas.sgemv(1.0, dout.T, np.ones(dout.shape[0], np.float32), beta=1.0, y=dbias, overwrite_y=1)

    @staticmethod
    def torch(dweight, dbias, dout, inp):
        dweight_t, dbias_t, dout_t, inp_t = _tensors(dweight, dbias, dout, inp)
        dweight_t.addmm_(dout_t.t(), inp_t)
        if dbias.shape[0]:
            dbias_t.add_(dout_t.sum(0))

    @staticmethod
    def sgemm(dweight, dbias, dout, inp):
        np.matmul(dout.T, inp, out=dweight)

    @staticmethod
    def naive(dweight, dbias, dout, inp):
        naive_backward_weight(dweight, dbias, dout, inp)


KERNELS = {k.name: k for k in (Forward(), BackwardInput(), BackwardWeight())}
OPS = {"forward": ("forward",), "backward": ("backward_input", "backward_weight"),
       "all": ("forward", "backward_input", "backward_weight")}

GPT2_WIDTHS = {"gpt2": 768, "gpt2-medium": 1024, "gpt2-large": 1280, "gpt2-xl": 1600}
GPT2_LAYERS = {"gpt2": 12, "gpt2-medium": 24, "gpt2-large": 36, "gpt2-xl": 48}
GPT2_VOCAB = 50304  # 50257 tokens, padded to a multiple of 128 as llm.c does


@dataclass(frozen=True)
class ModelMatmul:
    """One matmul of a GPT-2 training step: its shape, how many times a step runs it, and whether
    it has a bias (the LM head has none)."""
    name: str
    shape: Shape
    count: int
    bias: bool = True


def model_matmuls(model, B, T):
    """Every matmul of one GPT-2 step: per block qkv C->3C, attention projection C->C, MLP C->4C and
    4C->C, then the LM head C->vocabulary (logits = lnf @ wte.T, no bias)."""
    C, layers = GPT2_WIDTHS[model], GPT2_LAYERS[model]
    return [ModelMatmul("qkv", Shape(B, T, C, 3 * C), layers), ModelMatmul("attention projection", Shape(B, T, C, C), layers),
            ModelMatmul("mlp up", Shape(B, T, C, 4 * C), layers), ModelMatmul("mlp down", Shape(B, T, 4 * C, C), layers),
            ModelMatmul("lm head", Shape(B, T, C, GPT2_VOCAB), 1, bias=False)]


# The seed article's loops (llm.c's CPU matmuls, one thread per row), compiled with numba's
# default settings: the loop vectorizer turns each dot over C into SIMD.

@njit(parallel=True, fastmath=True)
def naive_forward(out, inp, weight, bias):
    M, K = inp.shape
    for m in prange(M):
        for o in range(weight.shape[0]):
            val = bias[o] if bias.shape[0] else 0.0
            for i in range(K):
                val += inp[m, i] * weight[o, i]
            out[m, o] = val


@njit(parallel=True, fastmath=True)
def naive_backward_input(dinp, dout, weight):
    for m in prange(dout.shape[0]):
        for o in range(dout.shape[1]):
            d = dout[m, o]
            for i in range(weight.shape[1]):
                dinp[m, i] += weight[o, i] * d


@njit(parallel=True, fastmath=True)
def naive_backward_weight(dweight, dbias, dout, inp):
    for o in prange(dout.shape[1]):
        for m in range(dout.shape[0]):
            d = dout[m, o]
            if dbias.shape[0]:
                dbias[o] += d
            for i in range(inp.shape[1]):
                dweight[o, i] += inp[m, i] * d
