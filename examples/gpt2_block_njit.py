"""One GPT-2 block's matmuls, forward and backward, from numba-compiled code, checked against numpy.

    python examples/gpt2_block_njit.py [--batch 4] [--seq 64]

The four matmuls of a block (llm.c's names): qkv C -> 3C, attention projection C -> C, MLP up
C -> 4C and MLP down 4C -> C. What sits between them (attention, GELU, layernorm) is left out: the
point is calling the tuned kernels from inside @njit code, as a numba port of llm.c would.
Random weights, no downloads.
"""
import argparse
import time

import numpy as np
from numba import njit

from tuned.njit import matmul_backward, matmul_forward


@njit
def block_forward(x, qkvw, qkvb, qkv, attprojw, attprojb, attproj, fcw, fcb, fc, fcprojw, fcprojb, fcproj):
    matmul_forward(qkv, x, qkvw, qkvb)              # (B,T,C) -> (B,T,3C)
    matmul_forward(attproj, x, attprojw, attprojb)  # here fed x; in GPT-2, the attention output
    matmul_forward(fc, attproj, fcw, fcb)           # (B,T,C) -> (B,T,4C)
    matmul_forward(fcproj, fc, fcprojw, fcprojb)    # (B,T,4C) -> (B,T,C)


@njit
def block_backward(grads, acts, params, douts):
    """grads ((dinp, dweight, dbias) each), acts, params, douts: tuples in the order of the four matmuls."""
    matmul_backward(grads[0][0], grads[0][1], grads[0][2], douts[0], acts[0], params[0])
    matmul_backward(grads[1][0], grads[1][1], grads[1][2], douts[1], acts[1], params[1])
    matmul_backward(grads[2][0], grads[2][1], grads[2][2], douts[2], acts[2], params[2])
    matmul_backward(grads[3][0], grads[3][1], grads[3][2], douts[3], acts[3], params[3])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--channels", type=int, default=768)
    args = parser.parse_args()
    B, T, C = args.batch, args.seq, args.channels
    rng = np.random.default_rng(0)
    f = lambda *shape: (0.02 * rng.standard_normal(shape)).astype(np.float32)
    x = f(B, T, C)
    params = [f(3 * C, C), f(C, C), f(4 * C, C), f(C, 4 * C)]  # weights (OC, C)
    biases = [f(3 * C), f(C), f(4 * C), f(C)]
    outs = [np.empty((B, T, w.shape[0]), np.float32) for w in params]

    start = time.perf_counter()
    block_forward(x, params[0], biases[0], outs[0], params[1], biases[1], outs[1], params[2], biases[2], outs[2],
                  params[3], biases[3], outs[3])
    print(f"forward: {time.perf_counter() - start:.2f} s (the first call compiles)")
    inputs = [x, x, outs[1], outs[2]]  # what each matmul read
    for out, inp, w, b in zip(outs, inputs, params, biases):
        assert np.allclose(out, inp @ w.T + b, rtol=1e-3, atol=1e-4)

    douts = [f(*out.shape) for out in outs]
    grads = [(np.zeros_like(inp), np.zeros_like(w), np.zeros_like(b)) for inp, w, b in zip(inputs, params, biases)]
    start = time.perf_counter()
    block_backward(tuple(grads), tuple(inputs), tuple(params), tuple(douts))
    print(f"backward: {time.perf_counter() - start:.2f} s")
    for (dinp, dweight, dbias), inp, w, dout in zip(grads, inputs, params, douts):
        d = dout.reshape(-1, dout.shape[-1])
        assert np.allclose(dinp, dout @ w, rtol=1e-3, atol=1e-5)
        assert np.allclose(dweight, d.T @ inp.reshape(-1, inp.shape[-1]), rtol=1e-3, atol=1e-4)
        assert np.allclose(dbias, d.sum(axis=0), rtol=1e-3, atol=1e-4)
    print("all four matmuls of the block match numpy, forward and backward")


if __name__ == "__main__":
    main()
