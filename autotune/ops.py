"""The llm.c matmuls as tunable kernels: shapes, references, baselines, FLOPs, inputs.

Each kernel is a GEMM written in its own terms: the output is M x N and K is the summed axis.

    forward          out[M, N]      = inp[M, K] @ weight[N, K].T + bias[N]     M=B*T  N=OC  K=C
    backward_input   dinp[M, N]    += dout[M, K] @ weight[K, N]                M=B*T  N=C   K=OC
    backward_weight  dweight[M, N] += dout[K, M].T @ inp[K, N]                 M=OC   N=C   K=B*T
                     dbias[M]      += dout[K, M] summed over K

llm.c's matmul_backward is backward_input followed by backward_weight.
"""
from dataclasses import dataclass

import numpy as np
from numba import njit, prange


@dataclass(frozen=True)
class Shape:
    """An llm.c matmul: inp is (B,T,C), weight is (OC,C), out is (B,T,OC)."""
    B: int
    T: int
    C: int
    OC: int

    @classmethod
    def parse(cls, text):
        """Shape.parse("64,1024,768,768") -> Shape(B=64, T=1024, C=768, OC=768)"""
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 4 or min(values) < 1:
            raise ValueError(f"shape must be four positive integers B,T,C,OC, got {text!r}")
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

    def __str__(self):
        return f"{self.kernel} M={self.M} N={self.N} K={self.K}"


class Kernel:
    """What the pipeline needs to know about one kernel family."""
    name: str
    template: str  # file in templates/
    entry: str  # function the template defines
    outputs: tuple  # arrays the kernel writes, in call order
    # Whether the template may read its operands in place (pack=False) instead of copying them
    # into panels first: only where the rows it reads already hold NR contiguous floats per step.
    pack_options = (True, False)

    def problem(self, shape):
        return Problem(self.name, *self.dims(shape))

    def inputs(self, problem, seed=0):
        """Random float32 arrays (outputs included: the backward kernels accumulate into them)."""
        rng = np.random.default_rng(seed)
        return {name: rng.standard_normal(dims, dtype=np.float32)
                for name, dims in self.array_shapes(problem).items()}

    def tolerance_terms(self, arrays):
        """(expected float64 result, magnitude bound) for each output, from the initial arrays."""
        raise NotImplementedError

    # blas(...): the kernel's job done as a numpy user writes it (same arguments as the kernel);
    # the baseline every winner is compared with, and what the loader runs where it is faster.


class Forward(Kernel):
    name, template, entry, outputs = "forward", "forward.py.jinja", "matmul_forward", ("out",)
    pack_options = (True,)  # weight[N, K] unpacked gives NR floats K apart per step: a gather, not a load

    def dims(self, s):
        return s.B * s.T, s.OC, s.C

    def array_shapes(self, p):
        return {"out": (p.M, p.N), "inp": (p.M, p.K), "weight": (p.N, p.K), "bias": (p.N,)}

    def call(self, fn, a):
        fn(a["out"], a["inp"], a["weight"], a["bias"])

    def tolerance_terms(self, a):
        x, w, b = (a[n].astype(np.float64) for n in ("inp", "weight", "bias"))
        return {"out": (x @ w.T + b, np.abs(x) @ np.abs(w).T + np.abs(b))}

    @staticmethod
    def blas(out, inp, weight, bias):
        np.matmul(inp, weight.T, out=out)
        out += bias

    def sgemm(self, a, scratch):
        np.matmul(a["inp"], a["weight"].T, out=scratch)

    def naive(self, a):
        naive_forward(a["out"], a["inp"], a["weight"], a["bias"])


class BackwardInput(Kernel):
    name, template, entry, outputs = ("backward_input", "backward_input.py.jinja",
                                      "matmul_backward_input", ("dinp",))

    def dims(self, s):
        return s.B * s.T, s.C, s.OC

    def array_shapes(self, p):
        return {"dinp": (p.M, p.N), "dout": (p.M, p.K), "weight": (p.K, p.N)}

    def call(self, fn, a):
        fn(a["dinp"], a["dout"], a["weight"])

    def tolerance_terms(self, a):
        d, w, g = (a[n].astype(np.float64) for n in ("dout", "weight", "dinp"))
        return {"dinp": (g + d @ w, np.abs(g) + np.abs(d) @ np.abs(w))}

    @staticmethod
    def blas(dinp, dout, weight):
        dinp += dout @ weight

    def sgemm(self, a, scratch):
        np.matmul(a["dout"], a["weight"], out=scratch)

    def naive(self, a):
        naive_backward_input(a["dinp"], a["dout"], a["weight"])


class BackwardWeight(Kernel):
    name, template, entry, outputs = ("backward_weight", "backward_weight.py.jinja",
                                      "matmul_backward_weight", ("dweight", "dbias"))

    def dims(self, s):
        return s.OC, s.C, s.B * s.T

    def array_shapes(self, p):
        return {"dweight": (p.M, p.N), "dbias": (p.M,), "dout": (p.K, p.M), "inp": (p.K, p.N)}

    def call(self, fn, a):
        fn(a["dweight"], a["dbias"], a["dout"], a["inp"])

    def tolerance_terms(self, a):
        d, x, gw, gb = (a[n].astype(np.float64) for n in ("dout", "inp", "dweight", "dbias"))
        return {"dweight": (gw + d.T @ x, np.abs(gw) + np.abs(d).T @ np.abs(x)),
                "dbias": (gb + d.sum(axis=0), np.abs(gb) + np.abs(d).sum(axis=0))}

    @staticmethod
    def blas(dweight, dbias, dout, inp):
        dweight += dout.T @ inp
        if dbias.shape[0]:  # a BLAS matrix-vector product: twice as fast as dout.sum(axis=0) here
            dbias += np.ones(dout.shape[0], np.float32) @ dout

    def sgemm(self, a, scratch):
        np.matmul(a["dout"].T, a["inp"], out=scratch)

    def naive(self, a):
        naive_backward_weight(a["dweight"], a["dbias"], a["dout"], a["inp"])


KERNELS = {k.name: k for k in (Forward(), BackwardInput(), BackwardWeight())}
OPS = {"forward": ("forward",), "backward": ("backward_input", "backward_weight"),
       "all": ("forward", "backward_input", "backward_weight")}

GPT2_WIDTHS = {"gpt2": 768, "gpt2-medium": 1024, "gpt2-large": 1280, "gpt2-xl": 1600}


def model_shapes(model, B, T):
    """The matmuls of one GPT-2 block: qkv C->3C, attention projection C->C, MLP C->4C and 4C->C."""
    C = GPT2_WIDTHS[model]
    return [Shape(B, T, C, 3 * C), Shape(B, T, C, C), Shape(B, T, C, 4 * C), Shape(B, T, 4 * C, C)]


# The seed article's loops (llm.c's CPU matmuls, one thread per row), compiled with numba's
# default settings: the loop vectorizer turns each dot over C into SIMD.

@njit(parallel=True, fastmath=True)
def naive_forward(out, inp, weight, bias):
    M, K = inp.shape
    for m in prange(M):
        for o in range(weight.shape[0]):
            val = bias[o]
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
            dbias[o] += d
            for i in range(inp.shape[1]):
                dweight[o, i] += inp[m, i] * d
