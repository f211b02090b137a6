"""Tuned llm.c matmuls for code compiled by numba: call them inside @njit functions.

    from tuned.njit import matmul_forward, matmul_backward

Importing this module builds the dispatch from this machine's winners (see autotune.load_njit).
"""
from autotune.load_njit import matmul_backward, matmul_forward

__all__ = ["matmul_forward", "matmul_backward"]
