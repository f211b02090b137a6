"""Tuned llm.c matmul kernels for this machine: `import tuned`, then call them like llm.c's.

    tuned.matmul_forward(out, inp, weight, bias)
    tuned.matmul_backward(dinp, dweight, dbias, dout, inp, weight)

This folder holds the winners `python -m autotune search` stored (a .json record and the
generated .py source each); AUTOTUNE_TUNED_DIR points the loader at another folder.
"""
from autotune.load import matmul_backward, matmul_forward

__all__ = ["matmul_forward", "matmul_backward"]
